// One whole-slide image read through OpenSlide (Aperio .svs, Hamamatsu
// .ndpi, MIRAX .mrxs, Philips TIFF, generic tiled TIFF, CAMELYON16's .tif).
// Needs IPSNET_HAVE_OPENSLIDE; without it open() says it was not built.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ipsnet {
namespace data {

/// True when this ipsnet was built with OpenSlide and libtiff.
bool have_openslide();

class WsiSlide {
 public:
  /// Throws one line with OpenSlide's message and the file name when the
  /// slide cannot be opened.
  static std::unique_ptr<WsiSlide> open(const std::string& path);
  ~WsiSlide();
  WsiSlide(const WsiSlide&) = delete;
  WsiSlide& operator=(const WsiSlide&) = delete;

  const std::string& path() const { return path_; }
  int level_count() const { return static_cast<int>(dims_.size()); }
  /// (width, height) of a level.
  std::pair<int64_t, int64_t> dimensions(int level) const;
  /// Level-0 pixels per pixel of the level.
  double downsample(int level) const;
  /// The level to read for a wanted downsample (OpenSlide's choice: the
  /// largest downsample not above it).
  int best_level_for_downsample(double downsample) const;
  /// A property's value, or nullopt ("openslide.mpp-x", "tiff.XResolution", ...).
  std::optional<std::string> property(const std::string& name) const;
  std::vector<std::string> property_names() const;
  /// Microns per pixel at level 0: openslide.mpp-x / -y, or else the TIFF
  /// resolution tags (tiff.XResolution with tiff.ResolutionUnit centimeter or
  /// inch). nullopt when the slide states neither.
  std::optional<double> mpp_x() const;
  std::optional<double> mpp_y() const;

  /// dst (h, w, 3) RGB: the region of w x h pixels of `level` whose top-left
  /// is (x, y) in level-0 coordinates. Alpha is removed by compositing over
  /// white (OpenSlide returns transparent pixels outside the scanned area).
  /// Safe to call from several threads.
  void read_region(int64_t x, int64_t y, int level, int64_t w, int64_t h, uint8_t* dst) const;

 private:
  WsiSlide() = default;
  std::optional<double> mpp(char axis) const;
  void check_error(const char* what) const;
  std::string path_;
  void* osr_ = nullptr;  // openslide_t*
  std::vector<std::pair<int64_t, int64_t>> dims_;
  std::vector<double> downsamples_;
};

}  // namespace data
}  // namespace ipsnet

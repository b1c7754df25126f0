// The "slides" data source: IPS straight on slide pixels. A dataset directory
// written by `ipsnet wsi-tiles` (slides.csv: name,split,label,tiles,slide and
// tiles/NAME.tiles) is one image per slide whose instances are its kept
// tiles, N varying per slide (lazy loading, B_seq 1, as the bags source).
//
// Nothing of a slide is read ahead: read_instances reads each requested tile
// through OpenSlide (read_region at the tile's level, RGB, alpha composited
// over white; resized when the tile file's read size differs from its output
// size), so host memory is the tiles in flight, not the slide. A slide's tile
// list and its OpenSlide handle are opened on first use and kept for the
// last few slides used (kOpenSlides), so that the coordinates of a split of
// large slides are not all resident either.
//
// Instances are (3, c, c) float in [0, 1] (or ImageNet-standardised with
// `normalize: imagenet`), c = the config's patch_size, which must be at most
// the tiles' side: smaller is a centre crop as torchvision's CenterCrop (as
// extract-features --crop). No whole images (has_pixels() is false: a slide
// is never read whole). Labels: one binary task `metastases`, a sigmoid
// target with one output, as the bags source.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "data/source.h"

namespace ipsnet {
namespace data {

struct SlideTiles;
class WsiSlide;

class SlideSource : public DataSource {
 public:
  /// Slides kept open (tile list and OpenSlide handle, whose tile cache is
  /// bounded by OpenSlide).
  static constexpr size_t kOpenSlides = 4;

  static bool detect(const std::string& dir);
  static std::unique_ptr<DataSource> open(const std::string& dir, const std::string& split,
                                          const SourceOptions& options);
  ~SlideSource() override;
  std::string kind() const override { return "slides"; }
  std::string describe() const override;
  int64_t size() const override { return static_cast<int64_t>(rows_.size()); }
  std::vector<LabelSpec> labels() const override;
  std::vector<int64_t> classes(int64_t i, const std::string& name) const override;
  std::vector<int64_t> instance_shape() const override { return {3, crop_, crop_}; }
  int64_t num_instances(int64_t i) const override;
  void read_instances(int64_t i, const int64_t* idx, int64_t n, float* dst) const override;
  /// Opens slide i's tile list and slide file ahead of use.
  void prefetch(int64_t i) const override;

  /// Tiles read from the slides so far (each a read_region), for tests.
  int64_t tiles_read() const { return tiles_read_.load(); }
  /// The tile side before the crop (the tile files' output size).
  int64_t tile_size() const { return tile_size_; }

 private:
  struct Row {
    std::string name, slide, tiles_file;
    int64_t label = -1, n = 0;
  };
  struct Open;
  std::shared_ptr<const Open> slide(int64_t i) const;

  std::string dir_, split_, normalize_;
  int64_t crop_ = 0, tile_size_ = 0;
  std::vector<Row> rows_;
  mutable std::mutex mu_;
  mutable std::vector<std::pair<int64_t, std::shared_ptr<const Open>>> open_;  // most recent last
  mutable std::atomic<int64_t> tiles_read_{0};
};

}  // namespace data
}  // namespace ipsnet

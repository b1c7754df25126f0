// The "photos" data source: photographs stored compressed by `ipsnet
// import-images` (data/photo_dataset.h). Labels come from the index (one
// task per CSV label column, or `label` for a folder tree), C = the set's
// channels (3, or 1 when every image is gray), each image its own patch grid
// (SourceOptions). Values are float in [0, 1] (C, H, W), or normalised per
// channel ((x - mean) / std) with SourceOptions::normalize = "imagenet".
//
// Training augmentation (SourceOptions::jitter, translate), as the
// reference's ColorJitter(j, j, j, j) then RandomAffine(translate) and
// before the normalisation: per (augment_seed, epoch, image) a random order of
// brightness, contrast, saturation and hue factors (torchvision's formulas,
// float, clamped to [0, 1]) and a shift (ty, tx) in [-translate, translate]
// with zero fill. Contrast blends with the image's mean gray level, taken
// from the unaugmented image (times the brightness factor when brightness
// comes first; exact unless clamping or hue intervene), computed once per
// image with a streaming decode. Lazy and eager reads agree exactly.
//
// Lazy loading decodes only the rows the requested patches cover (JPEG:
// jpeg_skip_scanlines over the others, columns cropped with
// jpeg_crop_scanline; PNG: rows inflated up to the last one needed, then the
// decoder stops), holding one band of patch_h rows of the cropped width.
// A decoder left part-way down an image is kept (at most kMaxCursors, most
// recent first) and continued by the next call for that image whose rows lie
// below the band it holds: the selection's chunks of I patches in index order
// then cost about one decode of the image per pass, not one per chunk.
#pragma once
#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "data/photo_dataset.h"
#include "data/source.h"

namespace ipsnet {
namespace data {

/// torchvision's ImageNet Normalize values (`normalize: imagenet`).
constexpr float kImagenetMean[3] = {0.485f, 0.456f, 0.406f};
constexpr float kImagenetStd[3] = {0.229f, 0.224f, 0.225f};

class PhotoSource : public DataSource {
 public:
  PhotoSource(PhotoReader reader, const SourceOptions& options);
  ~PhotoSource() override;
  static bool detect(const std::string& dir);
  static std::unique_ptr<DataSource> open(const std::string& dir, const std::string& split,
                                          const SourceOptions& options);

  std::string kind() const override { return "photos"; }
  std::string describe() const override;
  int64_t size() const override { return reader_.size(); }
  std::vector<LabelSpec> labels() const override;
  std::vector<int64_t> classes(int64_t i, const std::string& name) const override;
  std::vector<int64_t> instance_shape() const override { return {reader_.channels(), patch_h_, patch_w_}; }
  int64_t num_instances(int64_t i) const override { return grid(i).count(); }
  /// Decodes only the rows (and, for JPEG, about the columns) the patches cover.
  void read_instances(int64_t i, const int64_t* idx, int64_t n, float* dst) const override;
  /// Checks the record's CRC-32 (the bytes are paged in by it).
  void prefetch(int64_t i) const override { reader_.verify(i); }
  bool has_pixels() const override { return true; }
  int64_t channels() const override { return reader_.channels(); }
  PatchGrid grid(int64_t i) const override;
  void read_image(int64_t i, float* dst) const override;
  void set_epoch(int64_t epoch) override { epoch_.store(epoch); }

  /// The augmentation of image i in the current epoch (tests).
  struct Augment {
    int64_t ty = 0, tx = 0;                       // content moves down / right by (ty, tx)
    float brightness = 1, contrast = 1, saturation = 1, hue = 0;
    int order[4] = {0, 1, 2, 3};                  // 0 brightness, 1 contrast, 2 saturation, 3 hue
    bool jitter = false;
  };
  Augment augment(int64_t i) const;

  const PhotoReader& reader() const { return reader_; }
  /// Bytes of the largest row band one read_instances call held (tests, benchmarks).
  int64_t peak_band_bytes() const { return peak_band_.load(); }
  /// Decoders opened by read_instances so far (tests, benchmarks).
  int64_t decoders_opened() const { return decoders_opened_.load(); }
  static constexpr int kMaxCursors = 8;

 private:
  // dst[c * plane + k] = (v / 255 - mean[c]) / std[c], k over `count` pixels
  // interleaved in src with channels C.
  void convert(const uint8_t* src, int64_t count, float* dst, int64_t plane) const;
  // convert() with the colour jitter of `a` (mean: the image's gray mean).
  void convert_jitter(const uint8_t* src, int64_t count, float* dst, int64_t plane, const Augment& a,
                      float mean) const;
  float gray_mean(int64_t i) const;
  void read_image_plain(int64_t i, float* dst) const;
  bool augmenting() const { return jitter_ > 0 || translate_ > 0; }
  PhotoReader reader_;
  int64_t patch_h_ = 0, patch_w_ = 0, stride_h_ = 0, stride_w_ = 0;
  std::array<float, 3> mean_{{0, 0, 0}}, std_{{1, 1, 1}};
  mutable std::atomic<int64_t> peak_band_{0}, decoders_opened_{0};
  double jitter_ = 0;
  int64_t translate_ = 0;
  uint64_t augment_seed_ = 0;
  std::atomic<int64_t> epoch_{0};
  std::unique_ptr<std::atomic<float>[]> gray_means_;  // NaN until computed
  struct Cursor;
  std::unique_ptr<Cursor> take_cursor(int64_t i, int64_t first_row, int64_t c0, int64_t c1) const;
  void return_cursor(std::unique_ptr<Cursor> c) const;
  mutable std::mutex cursor_mu_;
  mutable std::vector<std::unique_ptr<Cursor>> cursors_;
};

}  // namespace data
}  // namespace ipsnet

// The "canvas" data source: ipsnet's sparse grayscale canvases (Megapixel
// MNIST and its variants, data/dataset.h), with the IPS task labels
// majority, max, top (10 classes) and multi (10-way multi-hot).
#pragma once
#include "data/dataset.h"
#include "data/source.h"

namespace ipsnet {
namespace data {

class CanvasSource : public DataSource {
 public:
  CanvasSource(DatasetReader reader, const SourceOptions& options);
  static bool detect(const std::string& dir);
  static std::unique_ptr<DataSource> open(const std::string& dir, const std::string& split,
                                          const SourceOptions& options);

  std::string kind() const override { return "canvas"; }
  std::string describe() const override;
  int64_t size() const override { return reader_.size(); }
  std::vector<LabelSpec> labels() const override;
  std::vector<int64_t> classes(int64_t i, const std::string& name) const override;
  std::vector<int64_t> instance_shape() const override { return {1, grid_.patch_h, grid_.patch_w}; }
  int64_t num_instances(int64_t) const override { return grid_.count(); }
  void read_instances(int64_t i, const int64_t* idx, int64_t n, float* dst) const override;
  /// From the sparse index: no pixel is decoded.
  bool instance_is_zero(int64_t i, int64_t p) const override;
  /// Touches the record, which verifies its checksum on first use.
  void prefetch(int64_t i) const override { (void)reader_.region_is_zero(i, 0, 0, 1, 1); }
  bool has_pixels() const override { return true; }
  int64_t channels() const override { return 1; }
  PatchGrid grid(int64_t) const override { return grid_; }
  void read_image(int64_t i, float* dst) const override { reader_.read_image(i, dst); }
  bool has_lowres() const override { return reader_.has_lowres(); }
  std::pair<int64_t, int64_t> lowres_size(int64_t) const override;
  void read_lowres(int64_t i, float* dst) const override { reader_.read_lowres(i, dst); }

  /// The stored split itself (data-info, tests).
  const DatasetReader& reader() const { return reader_; }

 private:
  DatasetReader reader_;
  PatchGrid grid_;
};

}  // namespace data
}  // namespace ipsnet

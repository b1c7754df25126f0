// The "bags" data source: one feature bag per whole-slide image (N x F
// float32, N varying per slide), written by `ipsnet extract-features`
// (data/bag_file.h). A dataset directory holds bags.csv
// (name,split,label,n,F,file) and the bags it names; split "train" or "test"
// selects the rows.
//
// No pixels (`is_image: false`): an instance is one row of F features.
// Bags are opened lazily (header through a read-only mapping) and
// read_instances reads only the rows asked for (pread for rows of a page or
// more, BagReader::read_rows), so host memory does not grow with N. Labels:
// one binary task, `metastases`
// (CAMELYON16's, as the reference config names it), a sigmoid target with
// one output: class 0 set for a positive slide, none for a negative one.
#pragma once
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "data/bag_file.h"
#include "data/source.h"

namespace ipsnet {
namespace data {

class BagSource : public DataSource {
 public:
  static bool detect(const std::string& dir);
  static std::unique_ptr<DataSource> open(const std::string& dir, const std::string& split,
                                          const SourceOptions& options);
  std::string kind() const override { return "bags"; }
  std::string describe() const override;
  int64_t size() const override { return static_cast<int64_t>(bags_.size()); }
  std::vector<LabelSpec> labels() const override;
  std::vector<int64_t> classes(int64_t i, const std::string& name) const override;
  std::vector<int64_t> instance_shape() const override { return {F_}; }
  int64_t num_instances(int64_t i) const override;
  void read_instances(int64_t i, const int64_t* idx, int64_t n, float* dst) const override;
  /// Verifies bag i's checksums the first time it is prefetched.
  void prefetch(int64_t i) const override;

  /// The bag of image i (names, coordinates; attention maps).
  const BagReader& bag(int64_t i) const;

 private:
  std::string dir_, split_;
  int64_t F_ = 0;
  std::vector<BagReader> bags_;
  std::unique_ptr<std::atomic<bool>[]> verified_;
};

}  // namespace data
}  // namespace ipsnet

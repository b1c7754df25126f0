// ipsnet's feature bag: one whole-slide image as N instance feature vectors
// (N x F float32), their level-0 tile coordinates and the slide's label, in
// one file that is memory-mapped for training (`ipsnet extract-features`
// writes it, the `bags` data source reads it lazily).
//
// Layout (little-endian, host order):
//   [0, 128)   header: magic "IPSNBAG1", version, N, F, label, tile geometry,
//              offsets, the file size, CRC-32s of the features and the
//              coordinates, and a CRC-32 of the header and names
//   [128, ...) the slide name and split (UTF-8, lengths in the header)
//   features   at a 64-byte aligned offset: N x F float32, row-major
//   coords     N x 2 int64 (x, y of each tile's top-left, level-0 pixels)
// A bag is written under a temporary name and renamed into place, so a
// resumed extraction never finds a partial slide.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/binary_file.h"

namespace ipsnet {
namespace data {

struct BagInfo {
  std::string name, split;
  int64_t n = 0, F = 0;
  int64_t label = -1;   // -1: unknown
  int32_t level = 0;    // read level of the tiles
  double extent0 = 0;   // tile side in level-0 pixels
  int64_t read_size = 0, out_size = 0;
};

/// Writes a bag atomically. features: (n, F); coords: (n, 2) level-0 (x, y).
void write_bag(const std::string& path, const BagInfo& info, const float* features, const int64_t* coords);

/// A bag mapped read-only. Opening checks the magic, the version, the size
/// (a truncated file is one clear line) and the header's checksum; the
/// features' and coordinates' checksums are checked by verify().
class BagReader {
 public:
  static BagReader open(const std::string& path);
  const BagInfo& info() const { return info_; }
  const std::string& path() const { return path_; }
  /// Row i of the features (F floats), straight from the mapping.
  const float* row(int64_t i) const { return row_ptr(i); }
  const float* features() const { return features_; }
  const int64_t* coords() const { return coords_; }
  /// dst (n, F): rows idx[0..n) (indices checked). Rows of a page or more
  /// (F >= 1024) are read with pread() rather than through the mapping: a
  /// mapping keeps every page a selection touched resident in the process
  /// (and the kernel maps neighbouring pages on each fault), so resident
  /// memory would grow with N as IPS visits every row of a large bag.
  void read_rows(const int64_t* idx, int64_t n, float* dst) const;
  /// Throws one line naming the file when a checksum fails (reads the
  /// features in 64 MiB chunks with pread(), not through the mapping).
  void verify() const;

 private:
  const float* row_ptr(int64_t i) const { return features_ + i * info_.F; }
  std::string path_;
  BagInfo info_;
  std::shared_ptr<MappedFile> map_;
  std::shared_ptr<int> fd_;  // the bag opened for pread (closed with the last copy)
  uint64_t features_offset_ = 0;
  void pread_all(void* dst, size_t n, uint64_t offset) const;
  const float* features_ = nullptr;
  const int64_t* coords_ = nullptr;
  uint32_t features_crc_ = 0, coords_crc_ = 0;
};

}  // namespace data
}  // namespace ipsnet

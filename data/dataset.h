// ipsnet's native Megapixel MNIST dataset format: sparse, indexed,
// memory-mapped, checksummed. The byte layout is described in docs/data.md.
//
// A dataset directory holds parameters.json and, per split S in {train, test}:
//   S.ipsd  data:  a 64-byte header, then one record per image (8-byte aligned)
//   S.ipsx  index: a 64-byte header, then one fixed 128-byte entry per image
//                  (record offset/size/CRC-32, nnz, labels, digit boxes)
// A record holds one sparse "view" of the image (two for `ats`: the
// full-resolution canvas and the low-resolution view). A view is stored
// row-ordered: per 64-row group the nnz offset of its first row (u32), the
// float32 values, a per-row nonzero count (u16), and the u16 column of every
// nonzero. A region therefore reads only its own rows, and finds its columns
// by binary search. Pixel values are float32 in [0, 1], stored exactly as
// generated (the `ats` noise is multiplied by U[0.8, 1.0], so no quantisation).
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/binary_file.h"

namespace ipsnet {
namespace data {

constexpr uint32_t kDatasetVersion = 1;
constexpr int kMaxDigitsPerImage = 5;
constexpr int64_t kMaxCanvasSide = 65535;  // columns are stored as u16
constexpr int64_t kRowGroup = 64;

/// One digit box: top-left (row, col), side `size`, class label.
struct DigitInfo {
  int64_t row, col, size;
  int label;
};

/// Per-image metadata and the four IPS task labels.
struct ImageMeta {
  std::vector<DigitInfo> digits;  // empty for datasets imported from the reference .npy files
  int64_t n_noise = 0;            // noise placements (-1 when unknown)
  int majority = -1, max = -1, top = -1;  // -1 when unknown
  std::array<uint8_t, 10> multi{};        // multi-hot of the classes present
};

/// A sparse single-channel image, rows in order, columns ascending in a row.
struct SparseImage {
  int64_t height = 0, width = 0;
  std::vector<uint16_t> row_counts;  // (height,)
  std::vector<uint16_t> cols;        // (nnz,)
  std::vector<float> vals;           // (nnz,) in (0, 1]
  int64_t nnz() const { return static_cast<int64_t>(vals.size()); }
  /// Builds from a dense (height, width) buffer, keeping values != 0.
  static SparseImage from_dense(const float* dense, int64_t height, int64_t width);
  /// Dense (height, width) copy.
  void to_dense(float* dst) const;
};

/// Split-level facts stored in the data header.
struct SplitHeader {
  int64_t n = 0;
  int64_t height = 0, width = 0;
  int64_t lowres_height = 0, lowres_width = 0;  // 0 when there is no low-res view
  std::string style;                           // "ats" | "ips" | "pineneedle" | "mnist"
};

/// Serialises one image (its full-resolution view and, when low is non-null,
/// the low-resolution view) into a record. Pure function; thread-safe.
std::vector<uint8_t> encode_record(const SparseImage& high, const SparseImage* low);

/// Streams records of one split to DIR/SPLIT.ipsd and DIR/SPLIT.ipsx in
/// order. Memory does not grow with the number of images. Every write is
/// checked (disk full etc.); finish() rewrites the headers with the counts
/// and checksums and closes both files. The destructor of an unfinished
/// writer closes the files without finishing them (the caller removes the
/// temporary directory).
class DatasetWriter {
 public:
  DatasetWriter(const std::string& dir, const std::string& split, const SplitHeader& header);
  ~DatasetWriter();
  DatasetWriter(const DatasetWriter&) = delete;
  DatasetWriter& operator=(const DatasetWriter&) = delete;
  /// Appends the next image; record from encode_record with the same views.
  void append(const std::vector<uint8_t>& record, int64_t nnz_high, int64_t nnz_low, const ImageMeta& meta);
  void finish();
  int64_t count() const { return count_; }
  /// Bytes written so far (both files).
  int64_t bytes() const;

 private:
  void write(void* f, const void* p, size_t n, const std::string& what);
  std::string data_path_, index_path_;
  SplitHeader header_;
  void* data_ = nullptr;
  void* index_ = nullptr;
  int64_t count_ = 0;
  uint64_t data_offset_ = 0;
  uint64_t index_bytes_ = 0;
  uint32_t index_crc_ = 0;
};

/// Read-only view of one split, memory-mapped; thread-safe for concurrent
/// reads. Header versions, header CRCs and the index CRC are checked on
/// open; each record's CRC-32 is checked the first time the image is read
/// (by any accessor that touches it) and by verify().
class DatasetReader {
 public:
  /// dir: a dataset directory; split: "train" | "test".
  static DatasetReader open(const std::string& dir, const std::string& split);

  int64_t size() const { return header_.n; }
  int64_t height() const { return header_.height; }
  int64_t width() const { return header_.width; }
  int64_t channels() const { return 1; }
  /// "ats" | "ips" | "pineneedle" | "mnist".
  std::string style() const { return header_.style; }
  bool has_lowres() const { return header_.lowres_height > 0; }
  int64_t lowres_height() const { return header_.lowres_height; }
  int64_t lowres_width() const { return header_.lowres_width; }

  const ImageMeta& meta(int64_t i) const;
  int64_t nnz(int64_t i) const;
  int64_t lowres_nnz(int64_t i) const;
  /// Bytes of image i's record on disk.
  int64_t record_bytes(int64_t i) const;

  /// dst: (H, W) dense, values in [0, 1].
  void read_image(int64_t i, float* dst) const;
  /// dst: (h, w) dense crop with top-left (r0, c0); zero outside the canvas.
  /// Reads only rows r0..r0+h-1 of the record.
  void read_region(int64_t i, int64_t r0, int64_t c0, int64_t h, int64_t w, float* dst) const;
  /// True when the region holds no nonzero; reads only the row counts and columns.
  bool region_is_zero(int64_t i, int64_t r0, int64_t c0, int64_t h, int64_t w) const;
  /// dst: (lowres_height, lowres_width); throws when the split has no low-res view.
  void read_lowres(int64_t i, float* dst) const;
  /// The sparse full-resolution (or low-resolution) view.
  SparseImage read_sparse(int64_t i, bool lowres = false) const;

  /// Checks the CRC-32 of record i (throws on mismatch).
  void verify(int64_t i) const;
  /// Checks every record.
  void verify_all() const;

 private:
  struct View {
    const uint32_t* group_off;
    const float* vals;
    const uint16_t* row_counts;
    const uint16_t* cols;
    int64_t height, width, nnz;
  };
  View view(int64_t i, bool lowres) const;  // verified first (CRC and structure)
  View raw_view(int64_t i, bool lowres) const;
  const uint8_t* entry(int64_t i) const;
  void check_index(int64_t i) const;

  std::shared_ptr<MappedFile> data_map_, index_map_;
  SplitHeader header_;
  std::string path_;
  std::vector<ImageMeta> metas_;
  std::shared_ptr<std::vector<std::atomic<uint8_t>>> verified_;
};

}  // namespace data
}  // namespace ipsnet

// ipsnet's photograph dataset format: the images' compressed bytes (JPEG as
// the user had them, PNG as PNG), an index with per-record CRC-32s, sizes,
// labels, and a label table; written through AtomicFile inside the
// importer's TempDirectory, read memory-mapped. Byte layout: docs/data.md,
// "Photographs".
//
// A dataset directory holds, per split S in {train, test}:
//   S.ipsp   data:  a 64-byte header, then the encoded files, 8-byte aligned
//   S.ipspx  index: a 64-byte header, one 64-byte entry per image, then the
//                   label table (tasks and class names, the source paths)
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/binary_file.h"
#include "data/photo_codec.h"
#include "engine/common/files.h"

namespace ipsnet {
namespace data {

constexpr uint32_t kPhotoVersion = 1;
constexpr int kMaxPhotoTasks = 8;

/// A label column: its name and class names (class k = classes[k]).
struct PhotoTask {
  std::string name;
  std::vector<std::string> classes;
};

/// One stored image.
struct PhotoEntry {
  PhotoFormat format = PhotoFormat::kUnknown;
  int channels = 0;                  ///< the file's own: 1 gray, 3 colour
  int64_t height = 0, width = 0;
  std::vector<int32_t> labels;       ///< one class per task
  std::string path;                  ///< where it came from (relative to the import source)
};

/// True when dir holds a photograph dataset (a train or test index).
bool is_photo_dataset(const std::string& dir);

/// Streams the images of one split into DIR/SPLIT.ipsp and DIR/SPLIT.ipspx
/// (each an AtomicFile: renamed into place by finish(), removed otherwise).
/// The index is kept in memory (64 bytes per image) and written by finish().
class PhotoWriter {
 public:
  PhotoWriter(const std::string& dir, const std::string& split, std::vector<PhotoTask> tasks);
  /// bytes: the encoded file; entry: its facts (labels, one per task).
  void append(const std::vector<uint8_t>& bytes, const PhotoEntry& entry);
  /// channels: the set's (3 when any image is colour, else 1).
  void finish(int channels);
  int64_t count() const { return static_cast<int64_t>(entries_.size()); }
  int64_t bytes() const { return static_cast<int64_t>(offset_); }

 private:
  std::vector<PhotoTask> tasks_;
  AtomicFile data_, index_;
  std::vector<uint8_t> entries_bytes_;
  std::vector<PhotoEntry> entries_;
  uint64_t offset_ = 0;
  uint32_t data_header_crc_ = 0;
};

/// One split, memory-mapped, safe for concurrent reads. Headers, the index
/// CRC and the label table's CRC are checked on open, each entry against the
/// data file; a record's CRC-32 the first time it is read and by verify().
class PhotoReader {
 public:
  static PhotoReader open(const std::string& dir, const std::string& split);
  int64_t size() const { return static_cast<int64_t>(entries_.size()); }
  int channels() const { return channels_; }
  const std::vector<PhotoTask>& tasks() const { return tasks_; }
  const PhotoEntry& entry(int64_t i) const;
  /// The encoded bytes of image i (CRC checked on first use).
  const uint8_t* bytes(int64_t i, size_t* n) const;
  /// "SPLIT.ipsp image I (PATH)": the name errors use.
  std::string name(int64_t i) const;
  void verify(int64_t i) const;
  void verify_all() const;
  const std::string& path() const { return path_; }

 private:
  std::shared_ptr<MappedFile> data_;
  std::string path_;
  int channels_ = 0;
  std::vector<PhotoTask> tasks_;
  std::vector<PhotoEntry> entries_;
  std::vector<uint64_t> offsets_, sizes_;
  std::vector<uint32_t> crcs_;
  std::shared_ptr<std::vector<std::atomic<uint8_t>>> verified_;
};

/// data-info for a photograph dataset: per split, counts per class of every
/// task, formats, channels, sizes (min/max, most common), bytes on disk.
std::string describe_photo_dataset(const std::string& dir, bool verify);

}  // namespace data
}  // namespace ipsnet

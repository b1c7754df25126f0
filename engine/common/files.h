// Files that appear whole or not at all: every writer of ipsnet (checkpoints,
// configs, predictions, datasets) writes to a temporary name beside the
// target and renames it into place, so an interrupted or failed run never
// leaves a half-written file or directory behind.
#pragma once
#include <cstddef>
#include <string>

namespace ipsnet {

/// A file written under a temporary name (PATH.tmp-PID-N) and renamed onto
/// PATH by commit(). Every write is checked (a full disk is one clear error);
/// destroying an uncommitted AtomicFile, or any failure, removes the
/// temporary.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  void write(const std::string& s) { write(s.data(), s.size()); }
  AtomicFile& operator<<(const std::string& s) {
    write(s);
    return *this;
  }
  /// Flushes, fsyncs and renames onto the final path.
  void commit();
  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return tmp_; }

 private:
  void discard() noexcept;
  std::string path_, tmp_;
  int fd_ = -1;
};

/// Writes `bytes` to `path` atomically (AtomicFile in one call).
void write_file_atomic(const std::string& path, const std::string& bytes);

/// Appends text to a log-like file (metrics, train.log), checking the write.
void append_file(const std::string& path, const std::string& text);

/// A directory built under a temporary name beside OUT (OUT.tmp-XXXXXX) and
/// renamed onto OUT by commit(). An existing OUT is refused unless `force`
/// (then it is moved aside and removed only after the rename succeeded). An
/// uncommitted TempDirectory removes itself.
class TempDirectory {
 public:
  TempDirectory(const std::string& out_dir, bool force);
  ~TempDirectory();
  TempDirectory(const TempDirectory&) = delete;
  TempDirectory& operator=(const TempDirectory&) = delete;
  const std::string& path() const { return tmp_; }
  void commit();

 private:
  std::string out_, tmp_;
  bool force_ = false, committed_ = false;
};

}  // namespace ipsnet

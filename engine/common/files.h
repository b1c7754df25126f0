// Files that appear whole or not at all: every writer of ipsnet (checkpoints,
// configs, predictions, datasets) writes to a temporary name beside the
// target and renames it into place, so an interrupted or failed run never
// leaves a half-written file or directory behind.
#pragma once
#include <cstddef>
#include <functional>
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
  bool registered_ = false;
  int fd_ = -1;
};

/// Temporaries that a signal must not leave behind: AtomicFile and
/// TempDirectory register theirs here; install_signal_cleanup() removes every
/// registered path (files, or directories recursively) on SIGINT or SIGTERM.
void register_temporary(const std::string& path);
void unregister_temporary(const std::string& path);
/// Removes every registered temporary now (also what the signal watcher does).
void remove_registered_temporaries() noexcept;
/// Renames `from` onto `to` and unregisters `from` as one step with respect to
/// the signal watcher (a signal never sees the file under both or neither name).
/// Returns 0 or the errno of rename(2).
int rename_registered(const std::string& from, const std::string& to) noexcept;

/// The signal handling of the `ipsnet` command, called first thing in main():
/// SIGINT and SIGTERM are caught (the handler only writes to a pipe) and
/// handled by one watcher thread. It calls the interrupt handler when one
/// is set (the trainer: finish the step, save a checkpoint, exit cleanly) and
/// otherwise, or on a second signal, removes every registered temporary,
/// prints one line and exits 130 (SIGINT) or 143 (SIGTERM).
void install_signal_cleanup();
/// handler(signal) is called on the watcher thread for the first signal only.
void set_interrupt_handler(std::function<void(int)> handler);

/// An advisory lock (flock, exclusive, non-blocking) held while the object
/// lives. On a directory it locks the directory itself (nothing is created);
/// for a file path it locks PATH.lock, created and removed by this object.
/// A lock held elsewhere is one clear error naming `what` and the path.
class PathLock {
 public:
  PathLock(const std::string& path, const std::string& what);
  ~PathLock();
  PathLock(const PathLock&) = delete;
  PathLock& operator=(const PathLock&) = delete;

 private:
  std::string lock_path_;
  bool own_file_ = false;
  int fd_ = -1;
};

/// Bytes free for an unprivileged writer on the file system holding `path`
/// (or its nearest existing parent); -1 when unknown.
long long free_disk_bytes(const std::string& path);
/// Physical memory of this machine in bytes (0 when unknown).
long long physical_memory_bytes();
/// "1.5 GiB" style.
std::string human_bytes(double bytes);

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

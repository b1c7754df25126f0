#include "engine/common/files.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "engine/common/error.h"

namespace ipsnet {

namespace fs = std::filesystem;

namespace {
std::string temp_name(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

// The registry of temporaries. The mutex is recursive so that the watcher
// thread can take it while a commit on another thread waits for it.
std::recursive_mutex& registry_mutex() {
  static std::recursive_mutex m;
  return m;
}
std::set<std::string>& registry() {
  static std::set<std::string> r;
  return r;
}
std::function<void(int)>& interrupt_handler() {
  static std::function<void(int)> h;
  return h;
}
}  // namespace

void register_temporary(const std::string& path) {
  std::lock_guard<std::recursive_mutex> g(registry_mutex());
  registry().insert(path);
}

void unregister_temporary(const std::string& path) {
  std::lock_guard<std::recursive_mutex> g(registry_mutex());
  registry().erase(path);
}

void remove_registered_temporaries() noexcept {
  try {
    std::lock_guard<std::recursive_mutex> g(registry_mutex());
    for (const std::string& p : registry()) {
      std::error_code ec;
      // Writers on other threads may still create files in a directory being
      // removed: retry a few times.
      for (int attempt = 0; attempt < 5; ++attempt) {
        fs::remove_all(p, ec);
        if (!fs::exists(fs::symlink_status(p, ec))) break;
      }
    }
    registry().clear();
  } catch (...) {
  }
}

int rename_registered(const std::string& from, const std::string& to) noexcept {
  std::lock_guard<std::recursive_mutex> g(registry_mutex());
  if (::rename(from.c_str(), to.c_str()) != 0) return errno;
  registry().erase(from);
  return 0;
}

void set_interrupt_handler(std::function<void(int)> handler) {
  std::lock_guard<std::recursive_mutex> g(registry_mutex());
  interrupt_handler() = std::move(handler);
}

namespace {
// The signal handler only writes the signal number into a pipe (async-signal-
// safe); the watcher thread does the work in a normal context. A handler and
// not a blocked mask: libraries start threads before main() (OpenBLAS's pool)
// and a blocked mask would not reach them.
int g_signal_pipe[2] = {-1, -1};

extern "C" void ipsnet_on_signal(int sig) {
  const int saved = errno;
  unsigned char b = static_cast<unsigned char>(sig);
  ssize_t ignored = ::write(g_signal_pipe[1], &b, 1);
  (void)ignored;
  errno = saved;
}
}  // namespace

void install_signal_cleanup() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (::pipe2(g_signal_pipe, O_CLOEXEC) != 0) return;
    struct sigaction sa;
    std::memset(&sa, 0, sizeof(sa));
    sa.sa_handler = ipsnet_on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
    std::thread([] {
      bool handled_once = false;
      for (;;) {
        unsigned char b = 0;
        ssize_t r = ::read(g_signal_pipe[0], &b, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r != 1) return;
        const int sig = b;
        std::function<void(int)> h;
        {
          std::lock_guard<std::recursive_mutex> g(registry_mutex());
          h = interrupt_handler();
        }
        if (h && !handled_once) {
          handled_once = true;
          h(sig);
          continue;
        }
        remove_registered_temporaries();
        const char* msg = sig == SIGTERM ? "ipsnet: terminated (SIGTERM); temporary files removed\n"
                                         : "ipsnet: interrupted (SIGINT); temporary files removed\n";
        ssize_t ignored = ::write(2, msg, std::strlen(msg));
        (void)ignored;
        std::_Exit(128 + sig);
      }
    }).detach();
  });
}

PathLock::PathLock(const std::string& path, const std::string& what) {
  std::error_code ec;
  const bool dir = fs::is_directory(path, ec);
  lock_path_ = dir ? path : path + ".lock";
  own_file_ = !dir;
  for (int attempt = 0; attempt < 10; ++attempt) {
    fd_ = ::open(lock_path_.c_str(), dir ? (O_RDONLY | O_DIRECTORY | O_CLOEXEC) : (O_RDWR | O_CREAT | O_CLOEXEC),
                 0644);
    IPSNET_CHECK(fd_ >= 0, "cannot lock ", what, " '", path, "': cannot open '", lock_path_, "' (",
                 std::strerror(errno), ")");
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      int err = errno;
      ::close(fd_);
      fd_ = -1;
      IPSNET_CHECK(err != EWOULDBLOCK, what, " '", path, "' is in use by another ipsnet process (locked); wait for it ",
                   "to finish");
      IPSNET_FAIL("cannot lock ", what, " '", path, "' (", std::strerror(err), ")");
    }
    if (dir) return;
    // A lock file removed by its previous holder between our open and flock
    // is not the lock any more: check that the path still names our inode.
    struct stat a, b;
    if (::fstat(fd_, &a) == 0 && ::stat(lock_path_.c_str(), &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev) {
      register_temporary(lock_path_);
      return;
    }
    ::close(fd_);
    fd_ = -1;
  }
  IPSNET_FAIL("cannot lock ", what, " '", path, "': its lock file '", lock_path_, "' keeps changing");
}

PathLock::~PathLock() {
  if (fd_ < 0) return;
  if (own_file_) {
    ::unlink(lock_path_.c_str());
    unregister_temporary(lock_path_);
  }
  ::close(fd_);
}

long long free_disk_bytes(const std::string& path) {
  std::error_code ec;
  fs::path p = fs::absolute(fs::path(path), ec);
  while (!p.empty() && !fs::exists(p, ec)) {
    if (p == p.parent_path()) break;
    p = p.parent_path();
  }
  struct statvfs st;
  if (::statvfs(p.empty() ? "." : p.c_str(), &st) != 0) return -1;
  if (st.f_blocks == 0) return -1;  // a pseudo file system (/proc): no size to compare with
  return static_cast<long long>(st.f_bavail) * static_cast<long long>(st.f_frsize);
}

long long physical_memory_bytes() {
  long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<long long>(pages) * page : 0;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (b >= 1024 && u < 6) {
    b /= 1024;
    ++u;
  }
  char buf[64];
  std::snprintf(buf, sizeof(buf), b >= 100 || u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
  return buf;
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)), tmp_(temp_name(path_)) {
  IPSNET_CHECK(!path_.empty(), "cannot write a file with an empty path");
  std::error_code ec;
  IPSNET_CHECK(!fs::is_directory(path_, ec), "cannot write '", path_, "': it is a directory");
  register_temporary(tmp_);
  registered_ = true;
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    int err = errno;
    unregister_temporary(tmp_);
    registered_ = false;
    IPSNET_FAIL("cannot write '", path_, "': cannot create '", tmp_, "' (", std::strerror(err), ")");
  }
}

AtomicFile::~AtomicFile() { discard(); }

void AtomicFile::discard() noexcept {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
    ::unlink(tmp_.c_str());
  }
  if (registered_) {
    unregister_temporary(tmp_);
    registered_ = false;
  }
}

void AtomicFile::write(const void* data, size_t n) {
  IPSNET_CHECK(fd_ >= 0, "'", path_, "' was already committed or discarded");
  const char* p = static_cast<const char*>(data);
  size_t done = 0;
  while (done < n) {
    ssize_t w = ::write(fd_, p + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int err = w < 0 ? errno : ENOSPC;
      discard();
      IPSNET_FAIL("writing '", path_, "' failed (", std::strerror(err), err == ENOSPC ? ": disk full" : "", ")");
    }
    done += static_cast<size_t>(w);
  }
}

void AtomicFile::commit() {
  IPSNET_CHECK(fd_ >= 0, "'", path_, "' was already committed or discarded");
  int sync_rc = ::fsync(fd_);
  int sync_err = errno;
  int close_rc = ::close(fd_);
  int close_err = errno;
  fd_ = -1;
  if (sync_rc != 0 || close_rc != 0) {
    discard();
    ::unlink(tmp_.c_str());
    int err = sync_rc != 0 ? sync_err : close_err;
    IPSNET_FAIL("writing '", path_, "' failed when flushing (", std::strerror(err), err == ENOSPC ? ": disk full" : "",
                ")");
  }
  if (int err = rename_registered(tmp_, path_)) {
    ::unlink(tmp_.c_str());
    discard();
    IPSNET_FAIL("cannot rename '", tmp_, "' to '", path_, "' (", std::strerror(err), ")");
  }
  registered_ = false;
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  AtomicFile f(path);
  f.write(bytes);
  f.commit();
}

void append_file(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  IPSNET_CHECK(fd >= 0, "cannot append to '", path, "' (", std::strerror(errno), ")");
  size_t done = 0;
  while (done < text.size()) {
    ssize_t w = ::write(fd, text.data() + done, text.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int err = w < 0 ? errno : ENOSPC;
      ::close(fd);
      IPSNET_FAIL("writing '", path, "' failed (", std::strerror(err), err == ENOSPC ? ": disk full" : "", ")");
    }
    done += static_cast<size_t>(w);
  }
  IPSNET_CHECK(::close(fd) == 0, "writing '", path, "' failed (", std::strerror(errno), ")");
}

TempDirectory::TempDirectory(const std::string& out_dir, bool force) : force_(force) {
  IPSNET_CHECK(!out_dir.empty(), "output directory must not be empty");
  std::error_code ec;
  out_ = out_dir;
  while (out_.size() > 1 && out_.back() == '/') out_.pop_back();
  fs::path out(out_);
  if (fs::exists(out, ec)) IPSNET_CHECK(force, "output '", out_dir, "' already exists; pass --force to replace it");
  fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  IPSNET_CHECK(fs::is_directory(parent, ec), "cannot create output '", out_dir, "': parent directory '",
               parent.string(), "' does not exist");
  std::string tmpl = out_ + ".tmp-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  IPSNET_CHECK(::mkdtemp(buf.data()) != nullptr, "cannot create a temporary directory beside '", out_dir, "' in '",
               parent.string(), "': ", std::strerror(errno), " (is it writable?)");
  // mkdtemp makes the directory 0700; give it the usual permissions.
  mode_t mask = ::umask(0);
  ::umask(mask);
  ::chmod(buf.data(), 0777 & ~mask);
  tmp_ = buf.data();
  register_temporary(tmp_);
}

TempDirectory::~TempDirectory() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(tmp_, ec);
  unregister_temporary(tmp_);
}

void TempDirectory::commit() {
  IPSNET_CHECK(!committed_, "'", out_, "' was already committed");
  std::error_code ec;
  if (fs::exists(out_, ec)) {
    IPSNET_CHECK(force_, "output '", out_, "' appeared while it was being written; pass --force to replace it");
    std::string old = out_ + ".old-" + std::to_string(::getpid());
    std::lock_guard<std::recursive_mutex> g(registry_mutex());
    fs::rename(out_, old, ec);
    IPSNET_CHECK(!ec, "cannot move the existing '", out_, "' aside: ", ec.message());
    register_temporary(old);
    if (int err = rename_registered(tmp_, out_)) {
      std::error_code ec2;
      fs::rename(old, out_, ec2);
      unregister_temporary(old);
      IPSNET_FAIL("cannot rename '", tmp_, "' to '", out_, "': ", std::strerror(err));
    }
    committed_ = true;
    fs::remove_all(old, ec);
    unregister_temporary(old);
  } else {
    int err = rename_registered(tmp_, out_);
    IPSNET_CHECK(err == 0, "cannot rename '", tmp_, "' to '", out_, "': ", std::strerror(err));
  }
  committed_ = true;
}

}  // namespace ipsnet

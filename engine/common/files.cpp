#include "engine/common/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "engine/common/error.h"

namespace ipsnet {

namespace fs = std::filesystem;

namespace {
std::string temp_name(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}
}  // namespace

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)), tmp_(temp_name(path_)) {
  IPSNET_CHECK(!path_.empty(), "cannot write a file with an empty path");
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  IPSNET_CHECK(fd_ >= 0, "cannot write '", path_, "': cannot create '", tmp_, "' (", std::strerror(errno), ")");
}

AtomicFile::~AtomicFile() { discard(); }

void AtomicFile::discard() noexcept {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
    ::unlink(tmp_.c_str());
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
    ::unlink(tmp_.c_str());
    IPSNET_FAIL("writing '", path_, "' failed when flushing (", std::strerror(sync_rc != 0 ? sync_err : close_err),
                ")");
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp_.c_str());
    IPSNET_FAIL("cannot rename '", tmp_, "' to '", path_, "' (", std::strerror(err), ")");
  }
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
}

TempDirectory::~TempDirectory() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(tmp_, ec);
}

void TempDirectory::commit() {
  IPSNET_CHECK(!committed_, "'", out_, "' was already committed");
  std::error_code ec;
  if (fs::exists(out_, ec)) {
    IPSNET_CHECK(force_, "output '", out_, "' appeared while it was being written; pass --force to replace it");
    std::string old = out_ + ".old-" + std::to_string(::getpid());
    fs::rename(out_, old, ec);
    IPSNET_CHECK(!ec, "cannot move the existing '", out_, "' aside: ", ec.message());
    fs::rename(tmp_, out_, ec);
    if (ec) {
      std::error_code ec2;
      fs::rename(old, out_, ec2);
      IPSNET_FAIL("cannot rename '", tmp_, "' to '", out_, "': ", ec.message());
    }
    fs::remove_all(old, ec);
  } else {
    fs::rename(tmp_, out_, ec);
    IPSNET_CHECK(!ec, "cannot rename '", tmp_, "' to '", out_, "': ", ec.message());
  }
  committed_ = true;
}

}  // namespace ipsnet

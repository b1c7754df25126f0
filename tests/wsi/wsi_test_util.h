// Helpers for the whole-slide tests: a scratch directory and running the
// `ipsnet` command as a user would.
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

namespace ipsnet {
namespace testing_wsi {

/// A fresh directory removed at scope exit.
struct WsiTempDir {
  std::string path;
  WsiTempDir() {
    char tmpl[] = "/tmp/ipsnet_wsi_test_XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~WsiTempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

/// Runs `ipsnet ARGS` (stdout and stderr into *out); returns the exit code.
inline int run_ipsnet(const std::string& args, std::string* out) {
  std::string full = std::string(IPSNET_BINARY) + " " + args + " 2>&1";
  FILE* p = ::popen(full.c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  std::string s;
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) s.append(buf, n);
  int rc = ::pclose(p);
  if (out) *out = s;
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

}  // namespace testing_wsi
}  // namespace ipsnet

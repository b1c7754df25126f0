// Helpers for the data tests: a scratch directory and small synthetic IDX
// digit files, so the tests need no download.
#pragma once
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/random/generator.h"

namespace ipsnet {
namespace testing_data {

/// A fresh directory removed at scope exit.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/ipsnet_data_test_XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

inline void put_be32(std::vector<uint8_t>& b, uint32_t v) {
  b.push_back(v >> 24), b.push_back((v >> 16) & 0xff), b.push_back((v >> 8) & 0xff), b.push_back(v & 0xff);
}

inline void write_file(const std::string& path, const std::vector<uint8_t>& bytes, bool gz) {
  if (gz) {
    gzFile f = gzopen(path.c_str(), "wb");
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
  } else {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
}

/// IDX image + label bytes for per_class digits of every class. Each digit
/// is a random pattern whose 20x20 centre is non-zero (values 1..255).
inline void make_idx_bytes(int per_class, uint64_t seed, std::vector<uint8_t>& img, std::vector<uint8_t>& lab) {
  Generator g(seed, 7);
  int n = per_class * 10;
  img.clear(), lab.clear();
  put_be32(img, 0x803), put_be32(img, n), put_be32(img, 28), put_be32(img, 28);
  put_be32(lab, 0x801), put_be32(lab, n);
  for (int i = 0; i < n; ++i) {
    lab.push_back(static_cast<uint8_t>(i % 10));
    for (int r = 0; r < 28; ++r)
      for (int c = 0; c < 28; ++c) {
        bool inside = r >= 4 && r < 24 && c >= 4 && c < 24;
        img.push_back(inside ? static_cast<uint8_t>(1 + g.randint(255)) : 0);
      }
  }
}

/// Writes train-* (per_train per class) and t10k-* (per_test per class) IDX files into dir.
inline void make_idx_dir(const std::string& dir, int per_train = 6, int per_test = 3, bool gz = true) {
  std::vector<uint8_t> img, lab;
  const std::string ext = gz ? ".gz" : "";
  make_idx_bytes(per_train, 1, img, lab);
  write_file(dir + "/train-images-idx3-ubyte" + ext, img, gz);
  write_file(dir + "/train-labels-idx1-ubyte" + ext, lab, gz);
  make_idx_bytes(per_test, 2, img, lab);
  write_file(dir + "/t10k-images-idx3-ubyte" + ext, img, gz);
  write_file(dir + "/t10k-labels-idx1-ubyte" + ext, lab, gz);
}

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// Runs a shell command; returns its exit status and fills out with stdout+stderr.
inline int run_capture(const std::string& cmd, std::string* out) {
  std::string full = cmd + " 2>&1";
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

}  // namespace testing_data
}  // namespace ipsnet

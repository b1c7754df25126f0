// Iterative Patch Selection (SPEC section 1): the no-gradient selection loop.
//
// Patches come from a PatchSource, so eager (a resident batch tensor), eager
// sequential and lazy (cut from the stored sparse image on demand) loading
// run the very same loop and select the same patches for the same seed.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/engine.h"
#include "models/ips_net.h"

namespace ipsnet {

/// Where the pixels of patches come from.
class PatchSource {
 public:
  virtual ~PatchSource() = default;
  /// Images in the batch (B) and patches per image (N).
  virtual int64_t batch() const = 0;
  virtual int64_t num_patches() const = 0;
  /// The patches (image[i], patch[i]) for i < n -> (n, C, h, w) on the model's device.
  virtual Tensor get(const std::vector<int64_t>& image, const std::vector<int64_t>& patch) = 0;
  /// True when the patch is known to hold only zeros (without reading pixels
  /// where the source can); enables the exact empty-patch shortcut.
  virtual bool is_zero(int64_t image, int64_t patch) const { return false; }
};

struct IPSOptions {
  int64_t M = 100;
  int64_t I = 100;
  bool shuffle = true;
  bool instance_shuffle = false;  // false: one permutation shared by the batch
  /// Stochastic top-K instance masking (0 = off): per iteration, each of the
  /// top-K candidates has its selection score zeroed with probability mask_p.
  int64_t mask_K = 0;
  double mask_p = 0.0;
  /// Exact shortcut: all-zero patches are encoded once per selection and the
  /// embedding reused (eval-mode BatchNorm makes the embedding a constant).
  bool dedup_zero = true;
  /// Exact shortcut: within each chunk the selection encodes (the first M, then
  /// each I per image, for the whole batch), patches with bytewise-identical
  /// pixels are encoded once and the embedding copied (64-bit hash, then a full
  /// comparison). Image patches in CPU memory only (not feature bags).
  bool dedup_identical = true;
  /// Exact shortcut: a ResNet encoder runs with its eval-mode BatchNorms folded
  /// into the convolutions during selection (ResNet::set_fold_bn); the
  /// encoder's own setting is restored afterwards. Same selected patches up to
  /// float rounding of the scores.
  bool fold_bn = false;
  /// Optional, off by default, not exact: the selection's convolutions run
  /// with bfloat16 inputs and weights (float32 accumulation and output) where
  /// the backend supports it (ConvBf16Guard; the CPU with AVX512-BF16).
  bool bf16 = false;
  /// Also score every patch in one pass over all N (for attention maps).
  bool score_all = false;
};

struct SelectionResult {
  Tensor idx;         // (B, M) int64 patch indices (row-major grid), CPU
  Tensor scores;      // (B, M) the last iteration's scores of the selected patches (undefined when M >= N)
  Tensor all_scores;  // (B, N) scores of one pass over all patches (score_all only)
  int64_t n_encoded = 0;  // patches run through the encoder (the shortcut lowers it)
};

/// Runs selection without gradients and with the network in eval mode (its
/// train/eval state is restored afterwards). pos: (N, D) positional encoding
/// or undefined. gen: draws the shuffle and the masks.
SelectionResult ips_select(IPSNet& net, PatchSource& src, const Tensor& pos, const IPSOptions& opt,
                           Generator& gen);

/// The row-major grid of patches over an H x W image.
struct PatchGrid {
  int64_t height = 0, width = 0, size = 0, stride = 0;
  int64_t rows() const { return (height - size) / stride + 1; }
  int64_t cols() const { return (width - size) / stride + 1; }
  int64_t count() const { return rows() * cols(); }
  int64_t row0(int64_t p) const { return (p / cols()) * stride; }
  int64_t col0(int64_t p) const { return (p % cols()) * stride; }
  /// Throws naming the sizes when the patch does not fit.
  static PatchGrid make(int64_t height, int64_t width, int64_t size, int64_t stride);
};

}  // namespace ipsnet

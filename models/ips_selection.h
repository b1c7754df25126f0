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
  /// The patches (image[i], patch[i]) for i < n -> (n, C, h, w) (or (n, F)
  /// for feature bags) on the model's device.
  virtual Tensor get(const std::vector<int64_t>& image, const std::vector<int64_t>& patch) = 0;
  /// The patches idx (B, k) int64 of every image, image-major -> (B*k, ...).
  Tensor get_rows(const Tensor& idx);
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
  /// With bfloat16 convolutions (bf16 above, or precision: bf16), the
  /// candidates whose scores lie within this relative margin of an image's
  /// top-M boundary are encoded again in float32 and rescored, so that the
  /// rounding of bf16 does not swap near-ties (0: off). Config key
  /// bf16_margin, which the trainer applies to evaluation's selection only.
  double bf16_margin = 0.0;
  /// Also score every patch in one pass over all N (for attention maps).
  bool score_all = false;
  /// Also return the selected patches' pixels (the training pass needs them).
  bool return_patches = false;
};

struct SelectionResult {
  Tensor idx;         // (B, M) int64 patch indices (row-major grid), CPU
  Tensor scores;      // (B, M) the last iteration's scores of the selected patches (undefined when M >= N)
  Tensor all_scores;  // (B, N) scores of one pass over all patches (score_all only)
  Tensor patches;      // (B*M, C, h, w) or (B*M, F) the selected patches (return_patches only)
  int64_t n_encoded = 0;  // patches run through the encoder (the shortcut lowers it)
  int64_t n_rescored = 0;  // candidates encoded again in float32 at the boundary (bf16_margin)
};

/// Runs selection without gradients and with the network in eval mode (its
/// train/eval state is restored afterwards, also when it throws). The
/// network adds its own positional encodings. gen: draws the shuffle and
/// the masks.
SelectionResult ips_select(IPSNet& net, PatchSource& src, const IPSOptions& opt, Generator& gen);

}  // namespace ipsnet

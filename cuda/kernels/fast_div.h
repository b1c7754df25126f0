// Division by a run-time constant without a division instruction, for
// dividends below 2^31 (Granlund and Montgomery, "Division by invariant
// integers using multiplication", 1994; the form PyTorch's IntDivider uses):
//   shift = ceil(log2 d), mul = floor(2^32 (2^shift - d) / d) + 1,
//   x / d = (umulhi(x, mul) + x) >> shift.
// Element kernels that need the channel of a flat index ((i / S) % C) pay two
// multiplications instead of two 64-bit divisions (a long software routine
// on the GPU). No CUDA header: the host form is tested without a GPU.
#pragma once
#include <cstdint>

#include "engine/common/hostdevice.h"

namespace ipsnet {
namespace cuda {

struct FastDiv {
  uint32_t d = 1, mul = 1, shift = 0;
  FastDiv() = default;
  /// divisor in [1, 2^31)
  explicit FastDiv(uint32_t divisor) : d(divisor) {
    while ((uint64_t(1) << shift) < d) ++shift;
    mul = static_cast<uint32_t>(((uint64_t(1) << 32) * ((uint64_t(1) << shift) - d)) / d + 1);
  }
  /// x / d for x < 2^31
  IPSNET_HD uint32_t div(uint32_t x) const {
#if defined(__CUDA_ARCH__)
    const uint32_t hi = __umulhi(x, mul);
#else
    const uint32_t hi = static_cast<uint32_t>((static_cast<uint64_t>(x) * mul) >> 32);
#endif
    return (hi + x) >> shift;
  }
};

}  // namespace cuda
}  // namespace ipsnet

// dtype conversion of one element, shared by the CPU loops and the CUDA
// kernels (copy with a dtype change, fill, masked fill).
//
// A plain static_cast from a floating-point value to an integer is undefined
// when the value is NaN or outside the integer's range, and the two devices
// really differ there (x86 gives INT64_MIN for all of them, the GPU's
// conversion saturates and gives 0 for NaN). One rule for both:
//   NaN -> 0; v >= 2^63 (+inf too) -> INT64_MAX; v < -2^63 (-inf too) -> INT64_MIN;
//   anything else truncates toward zero (as static_cast does).
// Every other pair of dtypes converts with static_cast.
#pragma once
#include <cstdint>
#include <type_traits>

#include "engine/common/hostdevice.h"

namespace ipsnet {
namespace math {

template <typename D, typename S>
IPSNET_HD D convert(S v) {
  if constexpr (std::is_same<D, int64_t>::value && std::is_floating_point<S>::value) {
    if (v != v) return 0;
    if (v >= S(9223372036854775808.0)) return INT64_MAX;   // 2^63, exact in float and double
    if (v < S(-9223372036854775808.0)) return INT64_MIN;
    return static_cast<int64_t>(v);
  } else {
    return static_cast<D>(v);
  }
}

}  // namespace math
}  // namespace ipsnet

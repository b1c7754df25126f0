// Philox4x32-10 counter-based random numbers (Salmon et al., SC'11).
// A draw is a pure function of (key = seed, counter), so the same numbers come
// out whatever the thread count or device: CPU loops and CUDA kernels call the
// same bodies with the same counters.
#pragma once
#include <cstdint>

#include "engine/common/hostdevice.h"

namespace ipsnet {
namespace math {

struct Philox4 {
  uint32_t v[4];
};

IPSNET_HD uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
  uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

/// Ten rounds of Philox4x32 on counter (c0..c3) with key (k0, k1).
IPSNET_HD Philox4 philox4x32(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                             uint32_t k1) {
  const uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  const uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, hi1;
    uint32_t lo0 = mulhilo32(kM0, c0, &hi0);
    uint32_t lo1 = mulhilo32(kM1, c2, &hi1);
    uint32_t n0 = hi1 ^ c1 ^ k0;
    uint32_t n1 = lo1;
    uint32_t n2 = hi0 ^ c3 ^ k1;
    uint32_t n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += kW0;
    k1 += kW1;
  }
  Philox4 out;
  out.v[0] = c0; out.v[1] = c1; out.v[2] = c2; out.v[3] = c3;
  return out;
}

/// The idx-th 32-bit draw of stream (seed, stream_id): element idx of the
/// sequence is word (idx % 4) of block (idx / 4).
IPSNET_HD uint32_t philox_u32(uint64_t seed, uint64_t stream_id, uint64_t idx) {
  uint64_t block = idx >> 2;
  Philox4 r = philox4x32(static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                         static_cast<uint32_t>(stream_id), static_cast<uint32_t>(stream_id >> 32),
                         static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return r.v[idx & 3];
}

/// Uniform float in [0, 1) with 24 random bits.
IPSNET_HD float u32_to_unit_float(uint32_t x) { return (x >> 8) * (1.0f / 16777216.0f); }

/// Uniform double in [0, 1) with 53 random bits from two draws.
IPSNET_HD double u64_to_unit_double(uint32_t hi, uint32_t lo) {
  uint64_t x = (static_cast<uint64_t>(hi) << 21) ^ (static_cast<uint64_t>(lo) >> 11);
  x &= (uint64_t(1) << 53) - 1;
  return static_cast<double>(x) * (1.0 / 9007199254740992.0);
}

}  // namespace math
}  // namespace ipsnet

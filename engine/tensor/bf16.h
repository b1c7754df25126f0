// Storage-only bfloat16 (DType::BFloat16): conversions from and to float32
// for the activations that precision: bf16 saves for backward.
//
// Rounding: float32 -> bfloat16 rounds to nearest, ties to even (the rounding
// of oneDNN's f32 -> bf16 reorders, which the bf16 convolutions and matmuls
// apply to their operands, and of CUDA's __float2bfloat16_rn), so a value
// saved in bfloat16 and widened back is exactly the operand the bf16
// primitive would have used. NaN stays a (quiet) NaN of the same sign.
// bfloat16 -> float32 is exact (the 16 bits become the high half).
#pragma once
#include <cstdint>
#include <cstring>

#include "engine/tensor/tensor.h"

namespace ipsnet {

inline uint16_t float_to_bf16_bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // NaN, quiet
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float bf16_bits_to_float(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float v;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

/// dst[i] = bf16(src[i]) for i < n (CPU; threaded, vectorisable).
void float_to_bf16_cpu(const float* src, uint16_t* dst, int64_t n);
/// dst[i] = float(src[i]) for i < n (CPU).
void bf16_to_float_cpu(const uint16_t* src, float* dst, int64_t n);

/// Whether a device can hold bfloat16 copies (the conversion exists there):
/// the CPU. CUDA tensors are saved in float32 (no conversion kernel is wired
/// through the backend interface yet).
inline bool bf16_storage_supported(Device d) { return d.is_cpu(); }

}  // namespace ipsnet

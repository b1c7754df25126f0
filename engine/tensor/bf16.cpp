#include "engine/tensor/bf16.h"

#include "engine/backend/cpu/parallel.h"

namespace ipsnet {

void float_to_bf16_cpu(const float* src, uint16_t* dst, int64_t n) {
  cpu::parallel_for(n, cpu::kGrain * 4, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) dst[i] = float_to_bf16_bits(src[i]);
  });
}

void bf16_to_float_cpu(const uint16_t* src, float* dst, int64_t n) {
  cpu::parallel_for(n, cpu::kGrain * 4, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) dst[i] = bf16_bits_to_float(src[i]);
  });
}

}  // namespace ipsnet

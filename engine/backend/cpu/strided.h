// Strided iteration over up to three operands that share a shape.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "engine/backend/cpu/parallel.h"
#include "engine/tensor/shape.h"

namespace ipsnet {
namespace cpu {

template <int K>
struct StridedPlan {
  std::vector<int64_t> shape;                  // coalesced, innermost last
  std::vector<std::array<int64_t, K>> stride;  // per dim, per operand
};

/// Merges adjacent dims that are contiguous for every operand; drops size-1 dims.
template <int K>
StridedPlan<K> make_plan(const Shape& shape, const std::array<const Shape*, K>& strides) {
  StridedPlan<K> p;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    std::array<int64_t, K> s;
    for (int k = 0; k < K; ++k) s[k] = (*strides[k])[d];
    if (!p.shape.empty()) {
      bool merge = true;
      for (int k = 0; k < K; ++k)
        if (p.stride.back()[k] != s[k] * shape[d]) merge = false;
      if (merge) {
        p.shape.back() *= shape[d];
        p.stride.back() = s;
        continue;
      }
    }
    p.shape.push_back(shape[d]);
    p.stride.push_back(s);
  }
  if (p.shape.empty()) {
    p.shape.push_back(1);
    p.stride.push_back(std::array<int64_t, K>{});
  }
  return p;
}

/// Calls f(offsets[K], len, inner_strides[K]) once per innermost row, in parallel.
template <int K, typename F>
void strided_rows(const Shape& shape, const std::array<const Shape*, K>& strides, F&& f) {
  StridedPlan<K> p = make_plan<K>(shape, strides);
  const int64_t nd = static_cast<int64_t>(p.shape.size());
  const int64_t len = p.shape.back();
  const std::array<int64_t, K> inner = p.stride.back();
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < nd; ++d) rows *= p.shape[static_cast<size_t>(d)];
  int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(len, 1));
  parallel_for(rows, grain, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      std::array<int64_t, K> off{};
      int64_t rem = r;
      for (int64_t d = nd - 2; d >= 0; --d) {
        int64_t sz = p.shape[static_cast<size_t>(d)];
        int64_t i = rem % sz;
        rem /= sz;
        for (int k = 0; k < K; ++k) off[k] += i * p.stride[static_cast<size_t>(d)][k];
      }
      f(off.data(), len, inner.data());
    }
  });
}

}  // namespace cpu
}  // namespace ipsnet

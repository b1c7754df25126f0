// Elementwise kernels: copy/convert, fill, unary (forward and backward),
// binary, masked fill, dropout masks, the fused AdamW update.
// Every kernel calls the bodies of engine/math (elementwise.h, rows.h,
// philox.h, convert.h) per element: the CPU backend runs the very same bodies.
// Accumulate rule: all outputs are written (=).
#include <type_traits>

#include "cuda/kernels/common.cuh"
#include "engine/math/convert.h"
#include "engine/math/philox.h"
#include "engine/math/rows.h"

namespace ipsnet {
namespace cuda {

namespace {

// ---- copy / fill ---------------------------------------------------------------

// dst (n) = src (n), contiguous
template <typename S, typename D>
__global__ void copy_contiguous_kernel(const S* __restrict__ src, D* __restrict__ dst, int64_t n) {
  IPSNET_GRID_STRIDE(i, n) dst[i] = math::convert<D>(src[i]);
}

// dst[off1] = src[off0] over the shared shape
template <typename S, typename D>
__global__ void copy_strided_kernel(const S* __restrict__ src, D* __restrict__ dst, StridedGeom<2> g,
                                    int64_t n) {
  IPSNET_GRID_STRIDE(i, n) {
    int64_t off[2];
    strided_offsets<2>(g, i, off);
    dst[off[1]] = math::convert<D>(src[off[0]]);
  }
}

template <typename T>
__global__ void fill_kernel(T* __restrict__ dst, T v, StridedGeom<1> g, int64_t n, bool contiguous) {
  IPSNET_GRID_STRIDE(i, n) {
    if (contiguous) {
      dst[i] = v;
    } else {
      int64_t off[1];
      strided_offsets<1>(g, i, off);
      dst[off[0]] = v;
    }
  }
}

template <typename F>
void dispatch_cuda_dtype(DType t, const char* what, F&& f) {
  switch (t) {
    case DType::Float32: f(float{}); return;
    case DType::Float64: f(double{}); return;
    case DType::Int64: f(int64_t{}); return;
    case DType::BFloat16: break;
  }
  IPSNET_FAIL(what, ": ", dtype_name(t), " is storage only on CUDA (no bfloat16 kernels)");
}

// ---- unary ---------------------------------------------------------------------

// y (n) = Op::fwd(x, alpha)
template <typename Op>
__global__ void unary_kernel(const float* __restrict__ x, float* y, int64_t n, float alpha) {
  IPSNET_GRID_STRIDE(i, n) y[i] = Op::template fwd<float>(x[i], alpha);
}

// dx (n) = Op::bwd(x, y, dy, alpha)
template <typename Op>
__global__ void unary_backward_kernel(const float* __restrict__ x, const float* __restrict__ y,
                                      const float* __restrict__ dy, float* __restrict__ dx,
                                      int64_t n, float alpha) {
  IPSNET_GRID_STRIDE(i, n) {
    dx[i] = Op::template bwd<float>(x ? x[i] : 0.0f, y ? y[i] : 0.0f, dy[i], alpha);
  }
}

// ---- binary / masked fill ---------------------------------------------------

// out (n) = Op::fwd(a, b); a, b strided views of out's shape
template <typename Op, typename T>
__global__ void binary_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out,
                              StridedGeom<3> g, int64_t n, bool contiguous) {
  IPSNET_GRID_STRIDE(i, n) {
    if (contiguous) {
      out[i] = Op::template fwd<T>(a[i], b[i]);
    } else {
      int64_t off[3];
      strided_offsets<3>(g, i, off);
      out[off[2]] = Op::template fwd<T>(a[off[0]], b[off[1]]);
    }
  }
}

// out = mask != 0 ? value : x
template <typename T, typename M>
__global__ void masked_fill_kernel(const T* __restrict__ x, const M* __restrict__ mask, T value,
                                   T* __restrict__ out, StridedGeom<3> g, int64_t n) {
  IPSNET_GRID_STRIDE(i, n) {
    int64_t off[3];
    strided_offsets<3>(g, i, off);
    out[off[2]] = mask[off[1]] != M(0) ? value : x[off[0]];
  }
}

// ---- random / optimizer --------------------------------------------------------

// mask (n): the CPU backend's formula, draw offset + i of (seed, stream)
__global__ void dropout_mask_kernel(float* __restrict__ mask, int64_t n, float p, uint64_t seed,
                                    uint64_t stream, uint64_t offset) {
  IPSNET_GRID_STRIDE(i, n) {
    mask[i] = math::dropout_mask_value<float>(
        math::u32_to_unit_float(math::philox_u32(seed, stream, offset + static_cast<uint64_t>(i))), p);
  }
}

// p, g, m, v (n): one AdamW step per element (engine/math/rows.h)
__global__ void adamw_kernel(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                             float* __restrict__ v, int64_t n, float lr, float b1, float b2, float eps,
                             float wd, float c1, float c2) {
  IPSNET_GRID_STRIDE(i, n) {
    math::adamw_element<float>(p + i, g + i, m + i, v + i, lr, b1, b2, eps, wd, c1, c2);
  }
}

// C[b] (m, n), row stride ldc: C = beta C
__global__ void scale_matrix_kernel(float* c, int64_t batch, int64_t m, int64_t n, int64_t ldc,
                                    int64_t stride_c, float beta) {
  const int64_t total = batch * m * n;
  IPSNET_GRID_STRIDE(i, total) {
    int64_t col = i % n, row = (i / n) % m, b = i / (n * m);
    float* e = c + b * stride_c + row * ldc + col;
    *e = beta == 0.0f ? 0.0f : beta * *e;
  }
}

}  // namespace

void copy_cuda(CudaContext& ctx, DType src_t, const void* src, DType dst_t, void* dst,
               const StridedGeom<2>& g, int64_t n, bool contiguous) {
  if (n == 0) return;
  const unsigned grid = grid_for(ctx, n, kThreads);
  dispatch_cuda_dtype(src_t, "copy", [&](auto s) {
    using S = decltype(s);
    dispatch_cuda_dtype(dst_t, "copy", [&](auto d) {
      using D = decltype(d);
      if (contiguous) {
        if (std::is_same<S, D>::value) {
          IPSNET_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(n) * sizeof(D),
                                            cudaMemcpyDeviceToDevice, ctx.stream));
          return;
        }
        copy_contiguous_kernel<S, D><<<grid, kThreads, 0, ctx.stream>>>(static_cast<const S*>(src),
                                                                          static_cast<D*>(dst), n);
        IPSNET_LAUNCH_CHECK("copy_contiguous_kernel");
      } else {
        copy_strided_kernel<S, D><<<grid, kThreads, 0, ctx.stream>>>(static_cast<const S*>(src),
                                                                       static_cast<D*>(dst), g, n);
        IPSNET_LAUNCH_CHECK("copy_strided_kernel");
      }
    });
  });
}

void fill_cuda(CudaContext& ctx, DType t, void* dst, double value, const StridedGeom<1>& g,
               int64_t n, bool contiguous) {
  if (n == 0) return;
  dispatch_cuda_dtype(t, "fill", [&](auto z) {
    using T = decltype(z);
    fill_kernel<T><<<grid_for(ctx, n, kThreads), kThreads, 0, ctx.stream>>>(
        static_cast<T*>(dst), math::convert<T>(value), g, n, contiguous);
    IPSNET_LAUNCH_CHECK("fill_kernel");
  });
}

void unary_cuda(CudaContext& ctx, math::UnaryOp op, const float* x, float* y, int64_t n, float alpha) {
  if (n == 0) return;
  math::dispatch_unary(op, [&](auto o) {
    using Op = decltype(o);
    unary_kernel<Op><<<grid_for(ctx, n, kThreads), kThreads, 0, ctx.stream>>>(x, y, n, alpha);
    IPSNET_LAUNCH_CHECK("unary_kernel");
  });
}

void unary_backward_cuda(CudaContext& ctx, math::UnaryOp op, const float* x, const float* y,
                         const float* dy, float* dx, int64_t n, float alpha) {
  if (n == 0) return;
  math::dispatch_unary(op, [&](auto o) {
    using Op = decltype(o);
    unary_backward_kernel<Op><<<grid_for(ctx, n, kThreads), kThreads, 0, ctx.stream>>>(x, y, dy, dx,
                                                                                      n, alpha);
    IPSNET_LAUNCH_CHECK("unary_backward_kernel");
  });
}

void binary_cuda(CudaContext& ctx, math::BinaryOp op, DType t, const void* a, const void* b,
                 void* out, const StridedGeom<3>& g, int64_t n, bool contiguous) {
  if (n == 0) return;
  const unsigned grid = grid_for(ctx, n, kThreads);
  math::dispatch_binary(op, [&](auto o) {
    using Op = decltype(o);
    if (t == DType::Float32) {
      binary_kernel<Op, float><<<grid, kThreads, 0, ctx.stream>>>(
          static_cast<const float*>(a), static_cast<const float*>(b), static_cast<float*>(out), g, n,
          contiguous);
    } else if (t == DType::Int64) {
      binary_kernel<Op, int64_t><<<grid, kThreads, 0, ctx.stream>>>(
          static_cast<const int64_t*>(a), static_cast<const int64_t*>(b), static_cast<int64_t*>(out),
          g, n, contiguous);
    } else {
      IPSNET_FAIL("binary: ", dtype_name(t), " is not supported on CUDA (float32, int64)");
    }
    IPSNET_LAUNCH_CHECK("binary_kernel");
  });
}

void masked_fill_cuda(CudaContext& ctx, DType t, const void* x, DType mask_t, const void* mask,
                      double value, void* out, const StridedGeom<3>& g, int64_t n) {
  if (n == 0) return;
  const unsigned grid = grid_for(ctx, n, kThreads);
  auto launch = [&](auto tz, auto mz) {
    using T = decltype(tz);
    using M = decltype(mz);
    masked_fill_kernel<T, M><<<grid, kThreads, 0, ctx.stream>>>(
        static_cast<const T*>(x), static_cast<const M*>(mask), math::convert<T>(value),
        static_cast<T*>(out), g, n);
    IPSNET_LAUNCH_CHECK("masked_fill_kernel");
  };
  IPSNET_CHECK((t == DType::Float32 || t == DType::Int64) &&
                   (mask_t == DType::Float32 || mask_t == DType::Int64),
               "masked_fill: CUDA supports float32 and int64, got ", dtype_name(t), " with a ",
               dtype_name(mask_t), " mask");
  if (t == DType::Float32) {
    if (mask_t == DType::Float32) launch(float{}, float{}); else launch(float{}, int64_t{});
  } else {
    if (mask_t == DType::Float32) launch(int64_t{}, float{}); else launch(int64_t{}, int64_t{});
  }
}

void dropout_mask_cuda(CudaContext& ctx, float* mask, int64_t n, float p, uint64_t seed,
                       uint64_t stream, uint64_t offset) {
  if (n == 0) return;
  dropout_mask_kernel<<<grid_for(ctx, n, kThreads), kThreads, 0, ctx.stream>>>(mask, n, p, seed,
                                                                              stream, offset);
  IPSNET_LAUNCH_CHECK("dropout_mask_kernel");
}

void adamw_cuda(CudaContext& ctx, float* p, const float* g, float* m, float* v, int64_t n, float lr,
                float beta1, float beta2, float eps, float weight_decay, float c1, float c2) {
  if (n == 0) return;
  adamw_kernel<<<grid_for(ctx, n, kThreads), kThreads, 0, ctx.stream>>>(p, g, m, v, n, lr, beta1, beta2,
                                                                       eps, weight_decay, c1, c2);
  IPSNET_LAUNCH_CHECK("adamw_kernel");
}

void scale_matrix_cuda(CudaContext& ctx, float* c, int64_t batch, int64_t m, int64_t n, int64_t ldc,
                       int64_t stride_c, float beta) {
  const int64_t total = batch * m * n;
  if (total == 0) return;
  scale_matrix_kernel<<<grid_for(ctx, total, kThreads), kThreads, 0, ctx.stream>>>(c, batch, m, n, ldc,
                                                                                 stride_c, beta);
  IPSNET_LAUNCH_CHECK("scale_matrix_kernel");
}

}  // namespace cuda
}  // namespace ipsnet

// CPU primitives. Each loop calls the bodies in engine/math, which the CUDA
// kernels call too. Accumulate rule: outputs are written (=) except
// scatter_add / index_add (+=) and gemm with beta != 0.
#include "engine/backend/cpu/cpu_backend.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <numeric>

#include "engine/backend/cpu/parallel.h"
#include "engine/backend/cpu/strided.h"
#include "engine/math/convert.h"
#include "engine/math/philox.h"
#include "engine/math/rows.h"
#include "engine/tensor/bf16.h"

namespace ipsnet {

using cpu::parallel_for;
using cpu::kGrain;

void CpuBackend::copy(const Tensor& src, const Tensor& dst) {
  if (src.dtype() == DType::BFloat16 || dst.dtype() == DType::BFloat16) {
    // Storage-only bfloat16: a contiguous copy, or a conversion from or to float32.
    IPSNET_CHECK(src.is_contiguous() && dst.is_contiguous() && src.numel() == dst.numel() &&
                     (src.dtype() == dst.dtype() || src.dtype() == DType::Float32 || dst.dtype() == DType::Float32),
                 "copy: ", dtype_name(src.dtype()), " ", shape_str(src.shape()), " to ", dtype_name(dst.dtype()), " ",
                 shape_str(dst.shape()), ": bfloat16 is storage only, expected contiguous bfloat16 <-> bfloat16 or "
                 "float32");
    const int64_t n = src.numel();
    if (src.dtype() == dst.dtype())
      std::memcpy(dst.raw_data(), src.raw_data(), src.nbytes());
    else if (dst.dtype() == DType::BFloat16)
      float_to_bf16_cpu(static_cast<const float*>(src.raw_data()), static_cast<uint16_t*>(dst.raw_data()), n);
    else
      bf16_to_float_cpu(static_cast<const uint16_t*>(src.raw_data()), static_cast<float*>(dst.raw_data()), n);
    return;
  }
  IPSNET_DISPATCH_ALL(src.dtype(), "copy", [&] {
    using S = scalar_t;
    IPSNET_DISPATCH_ALL(dst.dtype(), "copy", [&] {
      using D = scalar_t;
      const S* sp = static_cast<const S*>(src.raw_data());
      D* dp = static_cast<D*>(dst.raw_data());
      if (std::is_same<S, D>::value && src.is_contiguous() && dst.is_contiguous()) {
        const int64_t n = src.numel();
        parallel_for(n, kGrain * 4, [&](int64_t b, int64_t e) {
          std::memcpy(dp + b, sp + b, static_cast<size_t>(e - b) * sizeof(D));
        });
        return;
      }
      cpu::strided_rows<2>(dst.shape(), {&src.strides(), &dst.strides()},
                           [&](const int64_t* off, int64_t len, const int64_t* st) {
                             const S* s = sp + off[0];
                             D* d = dp + off[1];
                             if (st[0] == 1 && st[1] == 1) {
                               for (int64_t i = 0; i < len; ++i) d[i] = math::convert<D>(s[i]);
                             } else {
                               for (int64_t i = 0; i < len; ++i)
                                 d[i * st[1]] = math::convert<D>(s[i * st[0]]);
                             }
                           });
    });
  });
}

void CpuBackend::copy_across(const Tensor& src, const Tensor& dst) {
  IPSNET_CHECK(src.device().is_cpu() && dst.device().is_cpu(),
               "cpu backend: copy_across between ", src.device().str(), " and ", dst.device().str(),
               " needs the CUDA backend");
  copy(src, dst);
}

void CpuBackend::fill(const Tensor& dst, double value) {
  IPSNET_DISPATCH_ALL(dst.dtype(), "fill", [&] {
    scalar_t v = math::convert<scalar_t>(value);
    scalar_t* p = dst.data<scalar_t>();
    if (dst.is_contiguous()) {
      parallel_for(dst.numel(), kGrain, [&](int64_t b, int64_t e) { std::fill(p + b, p + e, v); });
      return;
    }
    cpu::strided_rows<1>(dst.shape(), {&dst.strides()},
                         [&](const int64_t* off, int64_t len, const int64_t* st) {
                           for (int64_t i = 0; i < len; ++i) p[off[0] + i * st[0]] = v;
                         });
  });
}

void CpuBackend::unary(math::UnaryOp op, const Tensor& x, const Tensor& y, double alpha) {
  IPSNET_DISPATCH_FLOAT(x.dtype(), "unary", [&] {
    using T = scalar_t;
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    T a = static_cast<T>(alpha);
    math::dispatch_unary(op, [&](auto o) {
      using Op = decltype(o);
      parallel_for(x.numel(), kGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) yp[i] = Op::template fwd<T>(xp[i], a);
      });
    });
  });
}

void CpuBackend::unary_backward(math::UnaryOp op, const Tensor& x, const Tensor& y,
                                const Tensor& dy, const Tensor& dx, double alpha) {
  IPSNET_DISPATCH_FLOAT(dy.dtype(), "unary_backward", [&] {
    using T = scalar_t;
    const T* xp = x.defined() ? x.data<T>() : nullptr;
    const T* yp = y.defined() ? y.data<T>() : nullptr;
    const T* gp = dy.data<T>();
    T* dp = dx.data<T>();
    T a = static_cast<T>(alpha);
    math::dispatch_unary(op, [&](auto o) {
      using Op = decltype(o);
      parallel_for(dy.numel(), kGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i)
          dp[i] = Op::template bwd<T>(xp ? xp[i] : T(0), yp ? yp[i] : T(0), gp[i], a);
      });
    });
  });
}

void CpuBackend::binary(math::BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  IPSNET_DISPATCH_ALL(out.dtype(), "binary", [&] {
    using T = scalar_t;
    const T* ap = static_cast<const T*>(a.raw_data());
    const T* bp = static_cast<const T*>(b.raw_data());
    T* op_ = out.data<T>();
    math::dispatch_binary(op, [&](auto o) {
      using Op = decltype(o);
      if (a.is_contiguous() && b.is_contiguous()) {
        parallel_for(out.numel(), kGrain, [&](int64_t s, int64_t e) {
          for (int64_t i = s; i < e; ++i) op_[i] = Op::template fwd<T>(ap[i], bp[i]);
        });
        return;
      }
      cpu::strided_rows<3>(out.shape(), {&a.strides(), &b.strides(), &out.strides()},
                           [&](const int64_t* off, int64_t len, const int64_t* st) {
                             const T* x = ap + off[0];
                             const T* y = bp + off[1];
                             T* z = op_ + off[2];
                             if (st[0] == 1 && st[1] == 1) {
                               for (int64_t i = 0; i < len; ++i) z[i] = Op::template fwd<T>(x[i], y[i]);
                             } else if (st[0] == 1 && st[1] == 0) {
                               T yv = y[0];
                               for (int64_t i = 0; i < len; ++i) z[i] = Op::template fwd<T>(x[i], yv);
                             } else if (st[0] == 0 && st[1] == 1) {
                               T xv = x[0];
                               for (int64_t i = 0; i < len; ++i) z[i] = Op::template fwd<T>(xv, y[i]);
                             } else {
                               for (int64_t i = 0; i < len; ++i)
                                 z[i * st[2]] = Op::template fwd<T>(x[i * st[0]], y[i * st[1]]);
                             }
                           });
    });
  });
}

void CpuBackend::masked_fill(const Tensor& x, const Tensor& mask, double value, const Tensor& out) {
  IPSNET_DISPATCH_ALL(out.dtype(), "masked_fill", [&] {
    using T = scalar_t;
    IPSNET_DISPATCH_ALL(mask.dtype(), "masked_fill", [&] {
      using MT = scalar_t;
      const T* xp = static_cast<const T*>(x.raw_data());
      const MT* mp = static_cast<const MT*>(mask.raw_data());
      T* op_ = out.data<T>();
      T v = math::convert<T>(value);
      cpu::strided_rows<3>(out.shape(), {&x.strides(), &mask.strides(), &out.strides()},
                           [&](const int64_t* off, int64_t len, const int64_t* st) {
                             for (int64_t i = 0; i < len; ++i)
                               op_[off[2] + i * st[2]] =
                                   mp[off[1] + i * st[1]] != MT(0) ? v : xp[off[0] + i * st[0]];
                           });
    });
  });
}

void CpuBackend::reduce(ReduceOp op, const Tensor& x, int64_t outer, int64_t n, int64_t inner,
                        const Tensor& out, const Tensor& argidx) {
  IPSNET_DISPATCH_ALL(x.dtype(), "reduce", [&] {
    using T = scalar_t;
    using Acc = typename std::conditional<std::is_floating_point<T>::value, double, int64_t>::type;
    const T* xp = x.data<T>();
    T* op_ = out.data<T>();
    int64_t* ip = argidx.defined() ? argidx.data<int64_t>() : nullptr;
    const bool is_max = op == ReduceOp::Max, is_min = op == ReduceOp::Min;
    const int64_t total = outer * inner;
    int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1));
    if (inner == 1) {
      parallel_for(outer, grain, [&](int64_t b, int64_t e) {
        for (int64_t o = b; o < e; ++o) {
          const T* row = xp + o * n;
          if (is_max || is_min) {
            T best = row[0];
            int64_t bi = 0;
            for (int64_t j = 1; j < n; ++j) {
              T v = row[j];
              if (is_max ? (v > best || (v != v && best == best)) : (v < best || (v != v && best == best))) {
                best = v;
                bi = j;
              }
            }
            op_[o] = best;
            if (ip) ip[o] = bi;
          } else {
            Acc s = 0;
            for (int64_t j = 0; j < n; ++j) s += static_cast<Acc>(row[j]);
            op_[o] = static_cast<T>(op == ReduceOp::Mean ? s / static_cast<Acc>(n) : s);
          }
        }
      });
      return;
    }
    // Column reduction: blocks of the inner axis keep the reads contiguous.
    constexpr int64_t kBlock = 256;
    const int64_t nblk = (inner + kBlock - 1) / kBlock;
    parallel_for(outer * nblk, std::max<int64_t>(1, grain / kBlock), [&](int64_t b, int64_t e) {
      Acc acc[kBlock];
      T best[kBlock];
      int64_t bidx[kBlock];
      for (int64_t t = b; t < e; ++t) {
        int64_t o = t / nblk, i0 = (t % nblk) * kBlock;
        int64_t w = std::min(kBlock, inner - i0);
        const T* base = xp + o * n * inner + i0;
        if (is_max || is_min) {
          for (int64_t i = 0; i < w; ++i) { best[i] = base[i]; bidx[i] = 0; }
          for (int64_t j = 1; j < n; ++j) {
            const T* r = base + j * inner;
            for (int64_t i = 0; i < w; ++i) {
              bool better = is_max ? r[i] > best[i] : r[i] < best[i];
              if (better) { best[i] = r[i]; bidx[i] = j; }
            }
          }
          for (int64_t i = 0; i < w; ++i) {
            op_[o * inner + i0 + i] = best[i];
            if (ip) ip[o * inner + i0 + i] = bidx[i];
          }
        } else {
          for (int64_t i = 0; i < w; ++i) acc[i] = 0;
          for (int64_t j = 0; j < n; ++j) {
            const T* r = base + j * inner;
            for (int64_t i = 0; i < w; ++i) acc[i] += static_cast<Acc>(r[i]);
          }
          for (int64_t i = 0; i < w; ++i)
            op_[o * inner + i0 + i] =
                static_cast<T>(op == ReduceOp::Mean ? acc[i] / static_cast<Acc>(n) : acc[i]);
        }
      }
    });
    (void)total;
  });
}

namespace {
int checked_int(int64_t v, const char* what) {
  IPSNET_CHECK(v >= 0 && v <= std::numeric_limits<int>::max(), "gemm: ", what, " = ", v,
               " does not fit the BLAS int");
  return static_cast<int>(v);
}
}  // namespace

void CpuBackend::gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                      const Tensor& a, int64_t lda, int64_t stride_a, const Tensor& b, int64_t ldb,
                      int64_t stride_b, double beta, const Tensor& c, int64_t ldc,
                      int64_t stride_c, int64_t batch) {
  int im = checked_int(m, "m"), in = checked_int(n, "n"), ik = checked_int(k, "k");
  int ilda = checked_int(std::max<int64_t>(lda, 1), "lda"), ildb = checked_int(std::max<int64_t>(ldb, 1), "ldb"),
      ildc = checked_int(std::max<int64_t>(ldc, 1), "ldc");
  CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
  CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
  if (m == 0 || n == 0) return;
  IPSNET_DISPATCH_FLOAT(c.dtype(), "gemm", [&] {
    using T = scalar_t;
    const T* ap = static_cast<const T*>(a.raw_data());
    const T* bp = static_cast<const T*>(b.raw_data());
    T* cp = c.data<T>();
    auto one = [&](int64_t i) {
      if (std::is_same<T, float>::value) {
        cblas_sgemm(CblasRowMajor, ta, tb, im, in, ik, static_cast<float>(alpha),
                    reinterpret_cast<const float*>(ap + i * stride_a), ilda,
                    reinterpret_cast<const float*>(bp + i * stride_b), ildb, static_cast<float>(beta),
                    reinterpret_cast<float*>(cp + i * stride_c), ildc);
      } else {
        cblas_dgemm(CblasRowMajor, ta, tb, im, in, ik, alpha,
                    reinterpret_cast<const double*>(ap + i * stride_a), ilda,
                    reinterpret_cast<const double*>(bp + i * stride_b), ildb, beta,
                    reinterpret_cast<double*>(cp + i * stride_c), ildc);
      }
    };
    if (k == 0) {
      // C = beta C (BLAS may not touch C when k == 0 and beta == 0 leaves garbage).
      for (int64_t i = 0; i < batch; ++i)
        for (int64_t r = 0; r < m; ++r)
          for (int64_t col = 0; col < n; ++col) {
            T& v = cp[i * stride_c + r * ldc + col];
            v = beta == 0.0 ? T(0) : static_cast<T>(beta) * v;
          }
      return;
    }
    for (int64_t i = 0; i < batch; ++i) one(i);
  });
}

void CpuBackend::softmax(const Tensor& x, const Tensor& y, int64_t outer, int64_t n, int64_t inner,
                         bool log) {
  IPSNET_DISPATCH_FLOAT(x.dtype(), "softmax", [&] {
    using T = scalar_t;
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    parallel_for(outer * inner, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)),
                 [&](int64_t b, int64_t e) {
                   for (int64_t r = b; r < e; ++r) {
                     int64_t o = r / inner, i = r % inner;
                     math::softmax_row<T>(xp + o * n * inner + i, yp + o * n * inner + i, n, inner, log);
                   }
                 });
  });
}

void CpuBackend::softmax_backward(const Tensor& y, const Tensor& dy, const Tensor& dx,
                                  int64_t outer, int64_t n, int64_t inner, bool log) {
  IPSNET_DISPATCH_FLOAT(y.dtype(), "softmax_backward", [&] {
    using T = scalar_t;
    const T* yp = y.data<T>();
    const T* gp = dy.data<T>();
    T* dp = dx.data<T>();
    parallel_for(outer * inner, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)),
                 [&](int64_t b, int64_t e) {
                   for (int64_t r = b; r < e; ++r) {
                     int64_t base = (r / inner) * n * inner + r % inner;
                     math::softmax_backward_row<T>(yp + base, gp + base, dp + base, n, inner, log);
                   }
                 });
  });
}

void CpuBackend::layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                            const Tensor& y, const Tensor& mean, const Tensor& rstd, int64_t rows,
                            int64_t n, double eps) {
  IPSNET_DISPATCH_FLOAT(x.dtype(), "layer_norm", [&] {
    using T = scalar_t;
    const T* xp = x.data<T>();
    const T* gp = gamma.defined() ? gamma.data<T>() : nullptr;
    const T* bp = beta.defined() ? beta.data<T>() : nullptr;
    T* yp = y.data<T>();
    T* mp = mean.data<T>();
    T* rp = rstd.data<T>();
    parallel_for(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r)
        math::layer_norm_row<T>(xp + r * n, gp, bp, yp + r * n, n, static_cast<T>(eps), mp + r, rp + r);
    });
  });
}

void CpuBackend::layer_norm_backward(const Tensor& x, const Tensor& gamma, const Tensor& dy,
                                     const Tensor& mean, const Tensor& rstd, const Tensor& dx,
                                     const Tensor& dgamma, const Tensor& dbeta, int64_t rows,
                                     int64_t n) {
  IPSNET_DISPATCH_FLOAT(x.dtype(), "layer_norm_backward", [&] {
    using T = scalar_t;
    const T* xp = x.data<T>();
    const T* gp = gamma.defined() ? gamma.data<T>() : nullptr;
    const T* dyp = dy.data<T>();
    const T* mp = mean.data<T>();
    const T* rp = rstd.data<T>();
    T* dxp = dx.data<T>();
    parallel_for(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r)
        math::layer_norm_backward_row<T>(xp + r * n, gp, dyp + r * n, dxp + r * n, n, mp[r], rp[r]);
    });
    // Parameter gradients: column sums over rows, parallel over columns.
    if (dgamma.defined() || dbeta.defined()) {
      T* dgp = dgamma.defined() ? dgamma.data<T>() : nullptr;
      T* dbp = dbeta.defined() ? dbeta.data<T>() : nullptr;
      parallel_for(n, std::max<int64_t>(1, kGrain / std::max<int64_t>(rows, 1)), [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          double sg = 0, sb = 0;
          for (int64_t r = 0; r < rows; ++r) {
            double g = dyp[r * n + i];
            sg += g * (static_cast<double>(xp[r * n + i]) - mp[r]) * rp[r];
            sb += g;
          }
          if (dgp) dgp[i] = static_cast<T>(sg);
          if (dbp) dbp[i] = static_cast<T>(sb);
        }
      });
    }
  });
}

namespace {
[[noreturn]] void index_error(const char* op, int64_t idx, int64_t n) {
  IPSNET_FAIL(op, ": index ", idx, " out of range for a dimension of size ", n);
}
}  // namespace

void CpuBackend::gather(const Tensor& x, const Tensor& index, const Tensor& out, int64_t outer,
                        int64_t n, int64_t k, int64_t inner) {
  const int64_t* ip = index.data<int64_t>();
  for (int64_t t = 0, total = outer * k * inner; t < total; ++t)
    if (ip[t] < 0 || ip[t] >= n) index_error("gather", ip[t], n);
  IPSNET_DISPATCH_ALL(x.dtype(), "gather", [&] {
    using T = scalar_t;
    const T* xp = x.data<T>();
    T* op_ = out.data<T>();
    parallel_for(outer * k, std::max<int64_t>(1, kGrain / std::max<int64_t>(inner, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        int64_t o = r / k;
        const int64_t* irow = ip + r * inner;
        T* orow = op_ + r * inner;
        const T* xb = xp + o * n * inner;
        for (int64_t i = 0; i < inner; ++i) orow[i] = xb[irow[i] * inner + i];
      }
    });
  });
}

void CpuBackend::scatter_add(const Tensor& src, const Tensor& index, const Tensor& out,
                             int64_t outer, int64_t n, int64_t k, int64_t inner) {
  const int64_t* ip = index.data<int64_t>();
  for (int64_t t = 0, total = outer * k * inner; t < total; ++t)
    if (ip[t] < 0 || ip[t] >= n) index_error("scatter_add", ip[t], n);
  IPSNET_DISPATCH_ALL(src.dtype(), "scatter_add", [&] {
    using T = scalar_t;
    const T* sp = src.data<T>();
    T* op_ = out.data<T>();
    // Parallel over outer only: two j may hit the same destination.
    parallel_for(outer, std::max<int64_t>(1, kGrain / std::max<int64_t>(k * inner, 1)), [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o)
        for (int64_t j = 0; j < k; ++j) {
          const int64_t* irow = ip + (o * k + j) * inner;
          const T* srow = sp + (o * k + j) * inner;
          T* ob = op_ + o * n * inner;
          for (int64_t i = 0; i < inner; ++i) ob[irow[i] * inner + i] += srow[i];
        }
    });
  });
}

void CpuBackend::index_select(const Tensor& x, const Tensor& index, const Tensor& out,
                              int64_t outer, int64_t n, int64_t k, int64_t inner) {
  const int64_t* ip = index.data<int64_t>();
  for (int64_t j = 0; j < k; ++j)
    if (ip[j] < 0 || ip[j] >= n) index_error("index_select", ip[j], n);
  IPSNET_DISPATCH_ALL(x.dtype(), "index_select", [&] {
    using T = scalar_t;
    const T* xp = x.data<T>();
    T* op_ = out.data<T>();
    parallel_for(outer * k, std::max<int64_t>(1, kGrain / std::max<int64_t>(inner, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        int64_t o = r / k, j = r % k;
        std::memcpy(op_ + r * inner, xp + (o * n + ip[j]) * inner, static_cast<size_t>(inner) * sizeof(T));
      }
    });
  });
}

void CpuBackend::index_add(const Tensor& src, const Tensor& index, const Tensor& out, int64_t outer,
                           int64_t n, int64_t k, int64_t inner) {
  const int64_t* ip = index.data<int64_t>();
  for (int64_t j = 0; j < k; ++j)
    if (ip[j] < 0 || ip[j] >= n) index_error("index_add", ip[j], n);
  IPSNET_DISPATCH_ALL(src.dtype(), "index_add", [&] {
    using T = scalar_t;
    const T* sp = src.data<T>();
    T* op_ = out.data<T>();
    parallel_for(outer, std::max<int64_t>(1, kGrain / std::max<int64_t>(k * inner, 1)), [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o)
        for (int64_t j = 0; j < k; ++j) {
          T* d = op_ + (o * n + ip[j]) * inner;
          const T* s = sp + (o * k + j) * inner;
          for (int64_t i = 0; i < inner; ++i) d[i] += s[i];
        }
    });
  });
}

void CpuBackend::topk(const Tensor& x, const Tensor& values, const Tensor& indices, int64_t rows,
                      int64_t n, int64_t k, bool largest) {
  IPSNET_DISPATCH_ALL(x.dtype(), "topk", [&] {
    using T = scalar_t;
    const T* xp = x.data<T>();
    T* vp = values.data<T>();
    int64_t* ip = indices.data<int64_t>();
    parallel_for(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(n * 4, 1)), [&](int64_t b, int64_t e) {
      std::vector<int64_t> idx(static_cast<size_t>(n));
      for (int64_t r = b; r < e; ++r) {
        const T* row = xp + r * n;
        std::iota(idx.begin(), idx.end(), int64_t(0));
        // Strict weak order: value first (NaN counts as largest), then lower index.
        auto better = [&](int64_t a, int64_t c) {
          T va = row[a], vc = row[c];
          bool na = va != va, nc = vc != vc;
          if (na || nc) {
            if (na && nc) return a < c;
            return largest ? na : nc;
          }
          if (va != vc) return largest ? va > vc : va < vc;
          return a < c;
        };
        std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), better);
        for (int64_t j = 0; j < k; ++j) {
          ip[r * k + j] = idx[static_cast<size_t>(j)];
          vp[r * k + j] = row[idx[static_cast<size_t>(j)]];
        }
      }
    });
  });
}

void CpuBackend::dropout_mask(const Tensor& mask, double p, uint64_t seed, uint64_t stream,
                              uint64_t offset) {
  IPSNET_DISPATCH_FLOAT(mask.dtype(), "dropout_mask", [&] {
    using T = scalar_t;
    T* mp = mask.data<T>();
    T pp = static_cast<T>(p);
    parallel_for(mask.numel(), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        mp[i] = math::dropout_mask_value<T>(
            math::u32_to_unit_float(math::philox_u32(seed, stream, offset + static_cast<uint64_t>(i))), pp);
    });
  });
}

void CpuBackend::adamw(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v,
                       double lr, double beta1, double beta2, double eps, double weight_decay,
                       int64_t step) {
  IPSNET_DISPATCH_FLOAT(p.dtype(), "adamw", [&] {
    using T = scalar_t;
    T* pp = p.data<T>();
    const T* gp = g.data<T>();
    T* mp = m.data<T>();
    T* vp = v.data<T>();
    T c1 = static_cast<T>(1.0 - std::pow(beta1, static_cast<double>(step)));
    T c2 = static_cast<T>(1.0 - std::pow(beta2, static_cast<double>(step)));
    parallel_for(p.numel(), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        math::adamw_element<T>(pp + i, gp + i, mp + i, vp + i, static_cast<T>(lr), static_cast<T>(beta1),
                               static_cast<T>(beta2), static_cast<T>(eps), static_cast<T>(weight_decay), c1, c2);
    });
  });
}

// ---- registry ---------------------------------------------------------------

namespace {
struct BackendRegistry {
  std::mutex mu;
  CpuBackend cpu;
  Backend* cuda = nullptr;
};
BackendRegistry& backends() {
  static BackendRegistry* r = new BackendRegistry();
  return *r;
}
}  // namespace

Backend& backend_for(Device d) {
  BackendRegistry& r = backends();
  if (d.is_cpu()) return r.cpu;
  std::lock_guard<std::mutex> lock(r.mu);
  IPSNET_CHECK(r.cuda != nullptr, "device ", d.str(),
               " requested but this build has no usable CUDA backend (run `ipsnet info`)");
  return *r.cuda;
}

void register_backend(DeviceType type, Backend* b) {
  IPSNET_CHECK(type == DeviceType::CUDA, "register_backend: only the CUDA backend registers");
  std::lock_guard<std::mutex> lock(backends().mu);
  backends().cuda = b;
}

}  // namespace ipsnet

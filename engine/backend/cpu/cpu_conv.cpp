// CPU convolution: oneDNN for float32, im2col + gemm reference (float, double).
// Accumulate rule: every output is written (=), dweight/dbias included; the
// autograd AccumulateGrad node adds parameter gradients into .grad.
#include <algorithm>
#include <cstring>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/backend/cpu/cpu_onednn.h"
#include "engine/backend/cpu/parallel.h"
#include "engine/math/conv.h"

namespace ipsnet {

using cpu::kGrain;
using cpu::parallel_for;

namespace {

// ---- reference: im2col + gemm ------------------------------------------------

// Images per im2col chunk: the column buffer (G, C*kh*kw, ho*wo) stays under
// ~64 MiB so a 1600-patch batch does not materialise a gigabyte of columns.
int64_t chunk_images(const Conv2dGeometry& g, size_t elem) {
  const double per_image = double(g.c * g.kh * g.kw) * double(g.ho * g.wo) * double(elem);
  const int64_t cap = static_cast<int64_t>((64.0 * 1024 * 1024) / std::max(per_image, 1.0));
  return std::max<int64_t>(1, std::min<int64_t>(g.n, cap));
}

// col (G, C*kh*kw, ho*wo) from images [n0, n0 + G) of x (N, C, H, W).
template <typename T>
void im2col_chunk(const T* x, T* col, int64_t n0, int64_t G, const Conv2dGeometry& g) {
  const int64_t taps = g.kh * g.kw, rows = G * g.c * taps, hw_out = g.ho * g.wo;
  parallel_for(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(hw_out, 1)),
               [&](int64_t b, int64_t e) {
                 for (int64_t r = b; r < e; ++r) {
                   const int64_t img = r / (g.c * taps), rem = r % (g.c * taps);
                   const int64_t c = rem / taps, t = rem % taps;
                   const T* plane = x + ((n0 + img) * g.c + c) * g.h * g.w;
                   math::im2col_row<T>(plane, col + r * hw_out, g.h, g.w, t / g.kw, t % g.kw, g.ho,
                                       g.wo, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw);
                 }
               });
}

template <typename T>
void conv_forward_ref(CpuBackend& be, const Tensor& x, const Tensor& weight, const Tensor& bias,
                      const Tensor& y, const Conv2dGeometry& g) {
  const int64_t K = g.c * g.kh * g.kw, P = g.ho * g.wo;
  const int64_t G = chunk_images(g, sizeof(T));
  Tensor col = Tensor::empty({G, K, P}, x.dtype());  // (G, C*kh*kw, ho*wo)
  for (int64_t n0 = 0; n0 < g.n; n0 += G) {
    const int64_t gn = std::min(G, g.n - n0);
    im2col_chunk<T>(x.data<T>(), col.data<T>(), n0, gn, g);
    // y[n] (O, P) = W (O, K) @ col[n] (K, P)
    be.gemm(false, false, g.o, P, K, 1.0, weight, K, 0, col, P, K * P, 0.0, y.narrow(0, n0, gn), P,
            g.o * P, gn);
  }
  if (bias.defined()) {
    const T* bp = bias.data<T>();
    T* yp = y.data<T>();
    parallel_for(g.n * g.o, std::max<int64_t>(1, kGrain / std::max<int64_t>(P, 1)),
                 [&](int64_t b, int64_t e) {
                   for (int64_t r = b; r < e; ++r) {
                     const T v = bp[r % g.o];
                     for (int64_t i = 0; i < P; ++i) yp[r * P + i] += v;
                   }
                 });
  }
}

template <typename T>
void conv_backward_data_ref(CpuBackend& be, const Tensor& dy, const Tensor& weight,
                            const Tensor& dx, const Conv2dGeometry& g) {
  const int64_t K = g.c * g.kh * g.kw, P = g.ho * g.wo, taps = g.kh * g.kw;
  const int64_t G = chunk_images(g, sizeof(T));
  Tensor dcol = Tensor::empty({G, K, P}, dy.dtype());
  T* dxp = dx.data<T>();
  for (int64_t n0 = 0; n0 < g.n; n0 += G) {
    const int64_t gn = std::min(G, g.n - n0);
    // dcol[n] (K, P) = W^T (K, O) @ dy[n] (O, P)
    be.gemm(true, false, K, P, g.o, 1.0, weight, K, 0, dy.narrow(0, n0, gn), P, g.o * P, 0.0, dcol,
            P, K * P, gn);
    const T* cp = dcol.data<T>();
    // One (image, channel) plane per task: its taps all land in that plane only.
    parallel_for(gn * g.c, std::max<int64_t>(1, kGrain / std::max<int64_t>(taps * P, 1)),
                 [&](int64_t b, int64_t e) {
                   for (int64_t pl = b; pl < e; ++pl) {
                     T* plane = dxp + (n0 * g.c + pl) * g.h * g.w;
                     std::fill(plane, plane + g.h * g.w, T(0));
                     for (int64_t t = 0; t < taps; ++t)
                       math::col2im_row_add<T>(cp + (pl * taps + t) * P, plane, g.h, g.w, t / g.kw,
                                               t % g.kw, g.ho, g.wo, g.sh, g.sw, g.ph, g.pw, g.dh,
                                               g.dw);
                   }
                 });
  }
}

template <typename T>
void conv_backward_weight_ref(CpuBackend& be, const Tensor& x, const Tensor& dy,
                              const Tensor& dweight, const Tensor& dbias,
                              const Conv2dGeometry& g) {
  const int64_t K = g.c * g.kh * g.kw, P = g.ho * g.wo;
  if (dweight.defined()) {
    const int64_t G = chunk_images(g, sizeof(T));
    Tensor col = Tensor::empty({G, K, P}, x.dtype());
    be.fill(dweight, 0.0);
    for (int64_t n0 = 0; n0 < g.n; n0 += G) {
      const int64_t gn = std::min(G, g.n - n0);
      im2col_chunk<T>(x.data<T>(), col.data<T>(), n0, gn, g);
      // dW (O, K) += dy[n] (O, P) @ col[n]^T (P, K), summed over the chunk's
      // images (stride_c = 0: the gemm runs the batch in order).
      be.gemm(false, true, g.o, K, P, 1.0, dy.narrow(0, n0, gn), P, g.o * P, col, P, K * P, 1.0,
              dweight, K, 0, gn);
    }
  }
  if (dbias.defined()) {
    const T* dyp = dy.data<T>();
    T* db = dbias.data<T>();
    parallel_for(g.o, 1, [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) {
        double s = 0;
        for (int64_t n = 0; n < g.n; ++n) {
          const T* p = dyp + (n * g.o + o) * P;
          for (int64_t i = 0; i < P; ++i) s += double(p[i]);
        }
        db[o] = T(s);
      }
    });
  }
}

// ---- oneDNN ------------------------------------------------------------------
// Primitives are built with format_tag::any so oneDNN picks its blocked
// layouts (nChw16c, OIhw16i16o, ...) and its direct JIT kernels; tensors stay
// plain NCHW/OIHW in the engine, so operands are reordered in and results out
// through scratch buffers from the engine allocator (counted in its stats).
// With plain layouts oneDNN 2.6 falls back to its gemm convolution, about
// half as fast at these shapes (see bench_conv).

using dnnl::memory;
using tag = dnnl::memory::format_tag;

memory::dims src_dims(const Conv2dGeometry& g) { return {g.n, g.c, g.h, g.w}; }
memory::dims wei_dims(const Conv2dGeometry& g) { return {g.o, g.c, g.kh, g.kw}; }
memory::dims dst_dims(const Conv2dGeometry& g) { return {g.n, g.o, g.ho, g.wo}; }

memory::desc any_md(const memory::dims& d) { return {d, memory::data_type::f32, tag::any}; }

// PyTorch's symmetric padding: padding_r = padding_l gives oneDNN's
// floor((H - span + 2p) / s) + 1 = ho, the same rounding as PyTorch.
dnnl::convolution_forward::desc conv_fwd_desc(const Conv2dGeometry& g, bool with_bias) {
  const memory::dims strides{g.sh, g.sw}, dil{g.dh - 1, g.dw - 1}, pad{g.ph, g.pw};
  if (with_bias)
    return {dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
            any_md(src_dims(g)), any_md(wei_dims(g)), {{g.o}, memory::data_type::f32, tag::x},
            any_md(dst_dims(g)), strides, dil, pad, pad};
  return {dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
          any_md(src_dims(g)), any_md(wei_dims(g)), any_md(dst_dims(g)), strides, dil, pad, pad};
}

// A plain tensor seen in the layout a primitive wants: the tensor itself when
// the layouts agree, else a scratch buffer that is reordered into (inputs) or
// out of (outputs, by finish()).
class Operand {
 public:
  Operand(const Tensor& t, const memory::dims& dims, tag plain, const memory::desc& want)
      : user_(cpu::wrap(t, dims, plain)) {
    if (want == user_.get_desc()) {
      mem_ = user_;
      return;
    }
    scratch_ = Tensor::empty({static_cast<int64_t>((want.get_size() + 3) / 4)}, DType::Float32);
    mem_ = memory(want, cpu::onednn_engine(), scratch_.raw_data());
  }
  /// For inputs: reorders the tensor into the primitive's layout.
  Operand& load() {
    if (scratch_.defined()) dnnl::reorder(user_, mem_).execute(cpu::onednn_stream(), user_, mem_);
    return *this;
  }
  /// For outputs: reorders the primitive's result back into the tensor.
  void finish() {
    if (scratch_.defined()) dnnl::reorder(mem_, user_).execute(cpu::onednn_stream(), mem_, user_);
  }
  const memory& mem() const { return mem_; }

 private:
  memory user_, mem_;
  Tensor scratch_;
};

struct ConvFwd {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward prim;
};
struct ConvBwdData {
  dnnl::convolution_backward_data::primitive_desc pd;
  dnnl::convolution_backward_data prim;
};
struct ConvBwdWeights {
  dnnl::convolution_backward_weights::primitive_desc pd;
  dnnl::convolution_backward_weights prim;
};

void conv_forward_onednn(const Tensor& x, const Tensor& weight, const Tensor& bias,
                         const Tensor& y, const Conv2dGeometry& g) {
  const bool with_bias = bias.defined();
  try {
    auto e = cpu::onednn_cached<ConvFwd>(str_cat("conv_fwd ", g.str(), with_bias ? " b" : ""), [&] {
      dnnl::convolution_forward::primitive_desc pd(conv_fwd_desc(g, with_bias), cpu::onednn_engine());
      return ConvFwd{pd, dnnl::convolution_forward(pd)};
    });
    Operand src(x, src_dims(g), tag::nchw, e->pd.src_desc());
    Operand wei(weight, wei_dims(g), tag::oihw, e->pd.weights_desc());
    Operand dst(y, dst_dims(g), tag::nchw, e->pd.dst_desc());
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src.load().mem()},
                                         {DNNL_ARG_WEIGHTS, wei.load().mem()},
                                         {DNNL_ARG_DST, dst.mem()}};
    if (with_bias) args.emplace(DNNL_ARG_BIAS, cpu::wrap(bias, {g.o}, tag::x));
    e->prim.execute(cpu::onednn_stream(), args);
    dst.finish();
    cpu::onednn_stream().wait();
  } catch (const dnnl::error& err) {
    cpu::onednn_fail("conv2d_forward", g.str(), err);
  }
}

void conv_backward_data_onednn(const Tensor& dy, const Tensor& weight, const Tensor& dx,
                               const Conv2dGeometry& g) {
  try {
    auto e = cpu::onednn_cached<ConvBwdData>(str_cat("conv_bwd_data ", g.str()), [&] {
      dnnl::convolution_forward::primitive_desc hint(conv_fwd_desc(g, false), cpu::onednn_engine());
      const memory::dims strides{g.sh, g.sw}, dil{g.dh - 1, g.dw - 1}, pad{g.ph, g.pw};
      dnnl::convolution_backward_data::desc d(dnnl::algorithm::convolution_direct,
                                              any_md(src_dims(g)), any_md(wei_dims(g)),
                                              any_md(dst_dims(g)), strides, dil, pad, pad);
      dnnl::convolution_backward_data::primitive_desc pd(d, cpu::onednn_engine(), hint);
      return ConvBwdData{pd, dnnl::convolution_backward_data(pd)};
    });
    Operand ddst(dy, dst_dims(g), tag::nchw, e->pd.diff_dst_desc());
    Operand wei(weight, wei_dims(g), tag::oihw, e->pd.weights_desc());
    Operand dsrc(dx, src_dims(g), tag::nchw, e->pd.diff_src_desc());
    e->prim.execute(cpu::onednn_stream(), {{DNNL_ARG_DIFF_DST, ddst.load().mem()},
                                           {DNNL_ARG_WEIGHTS, wei.load().mem()},
                                           {DNNL_ARG_DIFF_SRC, dsrc.mem()}});
    dsrc.finish();
    cpu::onednn_stream().wait();
  } catch (const dnnl::error& err) {
    cpu::onednn_fail("conv2d_backward_data", g.str(), err);
  }
}

void conv_backward_weight_onednn(const Tensor& x, const Tensor& dy, const Tensor& dweight,
                                 const Tensor& dbias, const Conv2dGeometry& g) {
  const bool with_bias = dbias.defined();
  // oneDNN always produces diff_weights; a caller wanting only dbias gets a scratch one.
  Tensor dw = dweight.defined() ? dweight : Tensor::empty({g.o, g.c, g.kh, g.kw}, DType::Float32);
  try {
    auto e = cpu::onednn_cached<ConvBwdWeights>(
        str_cat("conv_bwd_w ", g.str(), with_bias ? " b" : ""), [&] {
          dnnl::convolution_forward::primitive_desc hint(conv_fwd_desc(g, with_bias),
                                                         cpu::onednn_engine());
          const memory::dims strides{g.sh, g.sw}, dil{g.dh - 1, g.dw - 1}, pad{g.ph, g.pw};
          auto d = with_bias
                       ? dnnl::convolution_backward_weights::desc(
                             dnnl::algorithm::convolution_direct, any_md(src_dims(g)),
                             any_md(wei_dims(g)), {{g.o}, memory::data_type::f32, tag::x},
                             any_md(dst_dims(g)), strides, dil, pad, pad)
                       : dnnl::convolution_backward_weights::desc(
                             dnnl::algorithm::convolution_direct, any_md(src_dims(g)),
                             any_md(wei_dims(g)), any_md(dst_dims(g)), strides, dil, pad, pad);
          dnnl::convolution_backward_weights::primitive_desc pd(d, cpu::onednn_engine(), hint);
          return ConvBwdWeights{pd, dnnl::convolution_backward_weights(pd)};
        });
    Operand src(x, src_dims(g), tag::nchw, e->pd.src_desc());
    Operand ddst(dy, dst_dims(g), tag::nchw, e->pd.diff_dst_desc());
    Operand dwei(dw, wei_dims(g), tag::oihw, e->pd.diff_weights_desc());
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src.load().mem()},
                                         {DNNL_ARG_DIFF_DST, ddst.load().mem()},
                                         {DNNL_ARG_DIFF_WEIGHTS, dwei.mem()}};
    if (with_bias) args.emplace(DNNL_ARG_DIFF_BIAS, cpu::wrap(dbias, {g.o}, tag::x));
    e->prim.execute(cpu::onednn_stream(), args);
    dwei.finish();
    cpu::onednn_stream().wait();
  } catch (const dnnl::error& err) {
    cpu::onednn_fail("conv2d_backward_weight", g.str(), err);
  }
}

}  // namespace

void CpuBackend::conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                const Tensor& y, const Conv2dGeometry& g) {
  if (g.n == 0 || g.o == 0) return;
  if (g.c == 0) {  // empty reduction: y = bias (or 0)
    fill(y, 0.0);
    if (bias.defined()) binary(math::BinaryOp::Add, y, bias.view({1, g.o, 1, 1}).expand(y.shape()), y);
    return;
  }
  if (cpu::use_onednn(x.dtype())) return conv_forward_onednn(x, weight, bias, y, g);
  IPSNET_DISPATCH_FLOAT(x.dtype(), "conv2d_forward",
                        [&] { conv_forward_ref<scalar_t>(*this, x, weight, bias, y, g); });
}

void CpuBackend::conv2d_backward_data(const Tensor& dy, const Tensor& weight, const Tensor& dx,
                                      const Conv2dGeometry& g) {
  if (g.n == 0 || g.c == 0) return;
  if (g.o == 0) return fill(dx, 0.0);
  if (cpu::use_onednn(dy.dtype())) return conv_backward_data_onednn(dy, weight, dx, g);
  IPSNET_DISPATCH_FLOAT(dy.dtype(), "conv2d_backward_data",
                        [&] { conv_backward_data_ref<scalar_t>(*this, dy, weight, dx, g); });
}

void CpuBackend::conv2d_backward_weight(const Tensor& x, const Tensor& dy, const Tensor& dweight,
                                        const Tensor& dbias, const Conv2dGeometry& g) {
  if (g.o == 0) return;
  if (g.n == 0 || g.c == 0) {
    if (dweight.defined()) fill(dweight, 0.0);
    if (dbias.defined()) fill(dbias, 0.0);
    if (g.n == 0 || !dbias.defined()) return;
    // c == 0 with images: dbias still sums dy (below, by the reference).
    IPSNET_DISPATCH_FLOAT(dy.dtype(), "conv2d_backward_weight", [&] {
      conv_backward_weight_ref<scalar_t>(*this, x, dy, Tensor(), dbias, g);
    });
    return;
  }
  if (cpu::use_onednn(dy.dtype())) return conv_backward_weight_onednn(x, dy, dweight, dbias, g);
  IPSNET_DISPATCH_FLOAT(dy.dtype(), "conv2d_backward_weight",
                        [&] { conv_backward_weight_ref<scalar_t>(*this, x, dy, dweight, dbias, g); });
}

}  // namespace ipsnet

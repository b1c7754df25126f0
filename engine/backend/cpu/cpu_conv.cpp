// CPU convolution: oneDNN for float32 (and bfloat16 compute with float32
// tensors: Conv2dGeometry::bf16), im2col + gemm reference (float, double).
// Accumulate rule: every output is written (=), dweight/dbias included; the
// autograd AccumulateGrad node adds parameter gradients into .grad.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>

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
// Each primitive exists in two variants: "plain" (NCHW/OIHW descriptors, for
// which oneDNN 2.6 picks its gemm convolution) and "blocked" (format_tag::any:
// oneDNN's blocked layouts and direct JIT kernels, with the engine's plain
// tensors reordered in and out through allocator scratch). Neither wins
// everywhere (bench_conv at batch 1600, 2 cores: blocked is ~1.5-2x faster on
// 3x3 convs with 64-128 channels, plain several times faster on the 1-channel
// 7x7 stem and on 1x1 convs, where reorders dominate), so the first call of
// each shape picks one by a fixed rule from those measurements (plain for
// the 1x1 convs and the forward of convs with fewer than 8 input channels,
// blocked otherwise; the stem's backward-weights is 70x slower plain). The
// rule is deterministic, so the same seed gives the same numbers in every
// run. IPSNET_ONEDNN_LAYOUT=plain|blocked pins one everywhere; =timed times
// both on a shape's first call and keeps the faster (like cuDNN's search;
// results may then differ between runs in the last bits).

using dnnl::memory;
using tag = dnnl::memory::format_tag;

memory::dims src_dims(const Conv2dGeometry& g) { return {g.n, g.c, g.h, g.w}; }
memory::dims wei_dims(const Conv2dGeometry& g) { return {g.o, g.c, g.kh, g.kw}; }
memory::dims dst_dims(const Conv2dGeometry& g) { return {g.n, g.o, g.ho, g.wo}; }

memory::desc md(const memory::dims& d, tag t) { return {d, memory::data_type::f32, t}; }

// 0 = time both, 1 = plain, 2 = blocked, 3 = the fixed rule (default).
int layout_policy() {
  static const int policy = [] {
    const char* env = std::getenv("IPSNET_ONEDNN_LAYOUT");
    std::string v = env ? env : "";
    if (v == "plain") return 1;
    if (v == "blocked") return 2;
    if (v == "timed") return 0;
    IPSNET_CHECK(v.empty() || v == "rule", "IPSNET_ONEDNN_LAYOUT: expected rule, plain, blocked or timed, got \"",
                 v, "\"");
    return 3;
  }();
  return policy;
}

// The fixed rule: 0 = plain, 1 = blocked.
int rule_choice(const Conv2dGeometry& g, bool forward) {
  const bool one_by_one = g.kh == 1 && g.kw == 1;
  if (one_by_one) return 0;
  if (forward && g.c < 8) return 0;
  return 1;
}

// Descriptors of one variant: tag::any everywhere when blocked.
struct ConvMds {
  memory::desc src, wei, bias, dst;
  ConvMds(const Conv2dGeometry& g, bool blocked)
      : src(md(src_dims(g), blocked ? tag::any : tag::nchw)),
        wei(md(wei_dims(g), blocked ? tag::any : tag::oihw)),
        bias(md({g.o}, tag::x)),
        dst(md(dst_dims(g), blocked ? tag::any : tag::nchw)) {}
};

// PyTorch's symmetric padding: padding_r = padding_l gives oneDNN's
// floor((H - span + 2p) / s) + 1 = ho, the same rounding as PyTorch.
dnnl::convolution_forward::primitive_desc conv_fwd_pd(const Conv2dGeometry& g, bool with_bias,
                                                      bool blocked) {
  const ConvMds m(g, blocked);
  const memory::dims strides{g.sh, g.sw}, dil{g.dh - 1, g.dw - 1}, pad{g.ph, g.pw};
  auto d = with_bias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training,
                                                       dnnl::algorithm::convolution_direct, m.src,
                                                       m.wei, m.bias, m.dst, strides, dil, pad, pad)
                     : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training,
                                                       dnnl::algorithm::convolution_direct, m.src,
                                                       m.wei, m.dst, strides, dil, pad, pad);
  return {d, cpu::onednn_engine()};
}

dnnl::convolution_backward_data::primitive_desc conv_bwd_data_pd(const Conv2dGeometry& g,
                                                                 bool blocked) {
  const ConvMds m(g, blocked);
  const memory::dims strides{g.sh, g.sw}, dil{g.dh - 1, g.dw - 1}, pad{g.ph, g.pw};
  dnnl::convolution_backward_data::desc d(dnnl::algorithm::convolution_direct, m.src, m.wei, m.dst,
                                          strides, dil, pad, pad);
  return {d, cpu::onednn_engine(), conv_fwd_pd(g, false, blocked)};
}

dnnl::convolution_backward_weights::primitive_desc conv_bwd_weights_pd(const Conv2dGeometry& g,
                                                                       bool with_bias,
                                                                       bool blocked) {
  const ConvMds m(g, blocked);
  const memory::dims strides{g.sh, g.sw}, dil{g.dh - 1, g.dw - 1}, pad{g.ph, g.pw};
  auto d = with_bias ? dnnl::convolution_backward_weights::desc(
                           dnnl::algorithm::convolution_direct, m.src, m.wei, m.bias, m.dst,
                           strides, dil, pad, pad)
                     : dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct,
                                                                m.src, m.wei, m.dst, strides, dil,
                                                                pad, pad);
  return {d, cpu::onednn_engine(), conv_fwd_pd(g, with_bias, blocked)};
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
  const memory& load() {
    if (scratch_.defined()) dnnl::reorder(user_, mem_).execute(cpu::onednn_stream(), user_, mem_);
    return mem_;
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

// Both variants of one primitive and the choice between them (-1: not yet timed).
template <typename PD, typename Prim>
struct Variants {
  PD pd[2];
  Prim prim[2];
  mutable std::atomic<int> choice{-1};
  template <typename MakePd>
  Variants(MakePd&& make_pd, int rule) {
    for (int b = 0; b < 2; ++b) {
      pd[b] = make_pd(b == 1);
      prim[b] = Prim(pd[b]);
    }
    const int policy = layout_policy();
    if (policy == 1 || policy == 2) choice = policy - 1;
    if (policy == 3) choice = rule;
  }
};

// Runs run(pd, prim) with the chosen variant; on the first call times both
// (each writes the full outputs, so the last run's result stands).
template <typename V, typename Run>
void run_variant(const V& v, Run&& run) {
  int c = v.choice.load();
  if (c >= 0) return run(v.pd[c], v.prim[c]);
  double t[2];
  for (int b = 0; b < 2; ++b) {
    auto t0 = std::chrono::steady_clock::now();
    run(v.pd[b], v.prim[b]);
    t[b] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  v.choice.store(t[1] < t[0] ? 1 : 0);
}

using ConvFwd = Variants<dnnl::convolution_forward::primitive_desc, dnnl::convolution_forward>;
using ConvBwdData =
    Variants<dnnl::convolution_backward_data::primitive_desc, dnnl::convolution_backward_data>;
using ConvBwdWeights = Variants<dnnl::convolution_backward_weights::primitive_desc,
                                dnnl::convolution_backward_weights>;

// The cache holds non-copyable Variants: build in place.
template <typename V, typename MakePd>
std::shared_ptr<const V> cached_variants(const std::string& key, MakePd&& make_pd, int rule) {
  static std::mutex mu;
  static std::unordered_map<std::string, std::shared_ptr<const V>> cache;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  auto entry = std::make_shared<const V>(make_pd, rule);
  std::lock_guard<std::mutex> lock(mu);
  return cache.emplace(key, entry).first->second;
}

void conv_forward_onednn(const Tensor& x, const Tensor& weight, const Tensor& bias,
                         const Tensor& y, const Conv2dGeometry& g) {
  const bool with_bias = bias.defined();
  try {
    auto v = cached_variants<ConvFwd>(str_cat("conv_fwd ", g.str(), with_bias ? " b" : ""),
                                      [&](bool blocked) { return conv_fwd_pd(g, with_bias, blocked); },
                                      rule_choice(g, true));
    run_variant(*v, [&](const auto& pd, const auto& prim) {
      Operand src(x, src_dims(g), tag::nchw, pd.src_desc());
      Operand wei(weight, wei_dims(g), tag::oihw, pd.weights_desc());
      Operand dst(y, dst_dims(g), tag::nchw, pd.dst_desc());
      std::unordered_map<int, memory> args{
          {DNNL_ARG_SRC, src.load()}, {DNNL_ARG_WEIGHTS, wei.load()}, {DNNL_ARG_DST, dst.mem()}};
      if (with_bias) args.emplace(DNNL_ARG_BIAS, cpu::wrap(bias, {g.o}, tag::x));
      prim.execute(cpu::onednn_stream(), args);
      dst.finish();
      cpu::onednn_stream().wait();
    });
  } catch (const dnnl::error& err) {
    cpu::onednn_fail("conv2d_forward", g.str(), err);
  }
}

// bfloat16 inference (Conv2dGeometry::bf16): the float32 NCHW input and OIHW
// weights are reordered into oneDNN's bfloat16 blocked layouts (the same
// passes the blocked float32 path makes, at half the bytes written), the
// kernel accumulates in float32 and writes a float32 output.
struct ConvFwdBf16 {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward prim;
};

void conv_forward_bf16_onednn(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& y,
                              const Conv2dGeometry& g) {
  const bool with_bias = bias.defined();
  try {
    auto e = cpu::onednn_cached<ConvFwdBf16>(str_cat("conv_fwd_bf16 ", g.str(), with_bias ? " b" : ""), [&] {
      using dt = memory::data_type;
      const memory::desc src(src_dims(g), dt::bf16, tag::any), wei(wei_dims(g), dt::bf16, tag::any),
          b({g.o}, dt::f32, tag::x), dst(dst_dims(g), dt::f32, tag::any);
      const memory::dims strides{g.sh, g.sw}, dil{g.dh - 1, g.dw - 1}, pad{g.ph, g.pw};
      auto d = with_bias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                           dnnl::algorithm::convolution_direct, src, wei, b, dst,
                                                           strides, dil, pad, pad)
                         : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                           dnnl::algorithm::convolution_direct, src, wei, dst,
                                                           strides, dil, pad, pad);
      dnnl::convolution_forward::primitive_desc pd(d, cpu::onednn_engine());
      return ConvFwdBf16{pd, dnnl::convolution_forward(pd)};
    });
    Operand src(x, src_dims(g), tag::nchw, e->pd.src_desc());
    Operand wei(weight, wei_dims(g), tag::oihw, e->pd.weights_desc());
    Operand dst(y, dst_dims(g), tag::nchw, e->pd.dst_desc());
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, src.load()}, {DNNL_ARG_WEIGHTS, wei.load()}, {DNNL_ARG_DST, dst.mem()}};
    if (with_bias) args.emplace(DNNL_ARG_BIAS, cpu::wrap(bias, {g.o}, tag::x));
    e->prim.execute(cpu::onednn_stream(), args);
    dst.finish();
    cpu::onednn_stream().wait();
  } catch (const dnnl::error& err) {
    cpu::onednn_fail("conv2d_forward (bfloat16)", g.str(), err);
  }
}

// bfloat16 training (precision: bf16; Conv2dGeometry::bf16 recorded by the
// forward): backward-data reads dy and the weights in bfloat16 and writes a
// float32 dx; backward-weights reads x and dy in bfloat16 and writes float32
// dweight and dbias. Accumulation is float32 throughout. The forward hint is
// the bfloat16 training forward of the same geometry.
dnnl::convolution_forward::primitive_desc conv_fwd_bf16_hint(const Conv2dGeometry& g, bool with_bias) {
  using dt = memory::data_type;
  const memory::desc src(src_dims(g), dt::bf16, tag::any), wei(wei_dims(g), dt::bf16, tag::any),
      b({g.o}, dt::f32, tag::x), dst(dst_dims(g), dt::bf16, tag::any);
  const memory::dims strides{g.sh, g.sw}, dil{g.dh - 1, g.dw - 1}, pad{g.ph, g.pw};
  auto d = with_bias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training,
                                                       dnnl::algorithm::convolution_direct, src, wei, b, dst,
                                                       strides, dil, pad, pad)
                     : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training,
                                                       dnnl::algorithm::convolution_direct, src, wei, dst,
                                                       strides, dil, pad, pad);
  return {d, cpu::onednn_engine()};
}

struct ConvBwdDataBf16 {
  dnnl::convolution_backward_data::primitive_desc pd;
  dnnl::convolution_backward_data prim;
};
struct ConvBwdWeightsBf16 {
  dnnl::convolution_backward_weights::primitive_desc pd;
  dnnl::convolution_backward_weights prim;
};

void conv_backward_data_bf16_onednn(const Tensor& dy, const Tensor& weight, const Tensor& dx,
                                    const Conv2dGeometry& g) {
  try {
    auto e = cpu::onednn_cached<ConvBwdDataBf16>(str_cat("conv_bwd_data_bf16 ", g.str()), [&] {
      using dt = memory::data_type;
      const memory::desc dsrc(src_dims(g), dt::f32, tag::any), wei(wei_dims(g), dt::bf16, tag::any),
          ddst(dst_dims(g), dt::bf16, tag::any);
      const memory::dims strides{g.sh, g.sw}, dil{g.dh - 1, g.dw - 1}, pad{g.ph, g.pw};
      dnnl::convolution_backward_data::desc d(dnnl::algorithm::convolution_direct, dsrc, wei, ddst, strides, dil,
                                              pad, pad);
      dnnl::convolution_backward_data::primitive_desc pd(d, cpu::onednn_engine(), conv_fwd_bf16_hint(g, false));
      return ConvBwdDataBf16{pd, dnnl::convolution_backward_data(pd)};
    });
    Operand ddst(dy, dst_dims(g), tag::nchw, e->pd.diff_dst_desc());
    Operand wei(weight, wei_dims(g), tag::oihw, e->pd.weights_desc());
    Operand dsrc(dx, src_dims(g), tag::nchw, e->pd.diff_src_desc());
    e->prim.execute(cpu::onednn_stream(),
                    {{DNNL_ARG_DIFF_DST, ddst.load()}, {DNNL_ARG_WEIGHTS, wei.load()}, {DNNL_ARG_DIFF_SRC, dsrc.mem()}});
    dsrc.finish();
    cpu::onednn_stream().wait();
  } catch (const dnnl::error& err) {
    cpu::onednn_fail("conv2d_backward_data (bfloat16)", g.str(), err);
  }
}

void conv_backward_weight_bf16_onednn(const Tensor& x, const Tensor& dy, const Tensor& dweight,
                                      const Tensor& dbias, const Conv2dGeometry& g) {
  const bool with_bias = dbias.defined();
  Tensor dw = dweight.defined() ? dweight : Tensor::empty({g.o, g.c, g.kh, g.kw}, DType::Float32);
  try {
    auto e = cpu::onednn_cached<ConvBwdWeightsBf16>(
        str_cat("conv_bwd_w_bf16 ", g.str(), with_bias ? " b" : ""), [&] {
          using dt = memory::data_type;
          const memory::desc src(src_dims(g), dt::bf16, tag::any), dwei(wei_dims(g), dt::f32, tag::any),
              db({g.o}, dt::f32, tag::x), ddst(dst_dims(g), dt::bf16, tag::any);
          const memory::dims strides{g.sh, g.sw}, dil{g.dh - 1, g.dw - 1}, pad{g.ph, g.pw};
          auto d = with_bias ? dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, src,
                                                                        dwei, db, ddst, strides, dil, pad, pad)
                             : dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, src,
                                                                        dwei, ddst, strides, dil, pad, pad);
          dnnl::convolution_backward_weights::primitive_desc pd(d, cpu::onednn_engine(),
                                                                conv_fwd_bf16_hint(g, with_bias));
          return ConvBwdWeightsBf16{pd, dnnl::convolution_backward_weights(pd)};
        });
    // A caller that wants no dweight (x undefined) only needs dbias: oneDNN
    // still reads src, so it gets zeros of the right shape.
    Tensor xs = x.defined() ? x : Tensor::zeros({g.n, g.c, g.h, g.w}, DType::Float32);
    Operand src(xs, src_dims(g), tag::nchw, e->pd.src_desc());
    Operand ddst(dy, dst_dims(g), tag::nchw, e->pd.diff_dst_desc());
    Operand dwei(dw, wei_dims(g), tag::oihw, e->pd.diff_weights_desc());
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, src.load()}, {DNNL_ARG_DIFF_DST, ddst.load()}, {DNNL_ARG_DIFF_WEIGHTS, dwei.mem()}};
    if (with_bias) args.emplace(DNNL_ARG_DIFF_BIAS, cpu::wrap(dbias, {g.o}, tag::x));
    e->prim.execute(cpu::onednn_stream(), args);
    dwei.finish();
    cpu::onednn_stream().wait();
  } catch (const dnnl::error& err) {
    cpu::onednn_fail("conv2d_backward_weight (bfloat16)", g.str(), err);
  }
}

void conv_backward_data_onednn(const Tensor& dy, const Tensor& weight, const Tensor& dx,
                               const Conv2dGeometry& g) {
  try {
    auto v = cached_variants<ConvBwdData>(str_cat("conv_bwd_data ", g.str()),
                                          [&](bool blocked) { return conv_bwd_data_pd(g, blocked); },
                                          rule_choice(g, false));
    run_variant(*v, [&](const auto& pd, const auto& prim) {
      Operand ddst(dy, dst_dims(g), tag::nchw, pd.diff_dst_desc());
      Operand wei(weight, wei_dims(g), tag::oihw, pd.weights_desc());
      Operand dsrc(dx, src_dims(g), tag::nchw, pd.diff_src_desc());
      prim.execute(cpu::onednn_stream(), {{DNNL_ARG_DIFF_DST, ddst.load()},
                                          {DNNL_ARG_WEIGHTS, wei.load()},
                                          {DNNL_ARG_DIFF_SRC, dsrc.mem()}});
      dsrc.finish();
      cpu::onednn_stream().wait();
    });
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
    auto v = cached_variants<ConvBwdWeights>(
        str_cat("conv_bwd_w ", g.str(), with_bias ? " b" : ""),
        [&](bool blocked) { return conv_bwd_weights_pd(g, with_bias, blocked); }, rule_choice(g, false));
    run_variant(*v, [&](const auto& pd, const auto& prim) {
      Operand src(x, src_dims(g), tag::nchw, pd.src_desc());
      Operand ddst(dy, dst_dims(g), tag::nchw, pd.diff_dst_desc());
      Operand dwei(dw, wei_dims(g), tag::oihw, pd.diff_weights_desc());
      std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src.load()},
                                           {DNNL_ARG_DIFF_DST, ddst.load()},
                                           {DNNL_ARG_DIFF_WEIGHTS, dwei.mem()}};
      if (with_bias) args.emplace(DNNL_ARG_DIFF_BIAS, cpu::wrap(dbias, {g.o}, tag::x));
      prim.execute(cpu::onednn_stream(), args);
      dwei.finish();
      cpu::onednn_stream().wait();
    });
  } catch (const dnnl::error& err) {
    cpu::onednn_fail("conv2d_backward_weight", g.str(), err);
  }
}

}  // namespace

bool CpuBackend::supports_bf16_conv() const {
  static const bool has = [] {
    const int isa = static_cast<int>(dnnl::get_effective_cpu_isa());
    const int bf16 = static_cast<int>(dnnl::cpu_isa::avx512_core_bf16);
    return (isa & bf16) == bf16;  // oneDNN's ISA values are nested bit sets
  }();
  return has && cpu::use_onednn(DType::Float32);
}

void CpuBackend::conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                const Tensor& y, const Conv2dGeometry& g) {
  if (g.n == 0 || g.o == 0) return;
  if (g.c == 0) {  // empty reduction: y = bias (or 0)
    fill(y, 0.0);
    if (bias.defined()) binary(math::BinaryOp::Add, y, bias.view({1, g.o, 1, 1}).expand(y.shape()), y);
    return;
  }
  if (g.bf16 && x.dtype() == DType::Float32 && supports_bf16_conv())
    return conv_forward_bf16_onednn(x, weight, bias, y, g);
  if (cpu::use_onednn(x.dtype())) return conv_forward_onednn(x, weight, bias, y, g);
  IPSNET_DISPATCH_FLOAT(x.dtype(), "conv2d_forward",
                        [&] { conv_forward_ref<scalar_t>(*this, x, weight, bias, y, g); });
}

void CpuBackend::conv2d_backward_data(const Tensor& dy, const Tensor& weight, const Tensor& dx,
                                      const Conv2dGeometry& g) {
  if (g.n == 0 || g.c == 0) return;
  if (g.o == 0) return fill(dx, 0.0);
  if (g.bf16 && dy.dtype() == DType::Float32 && supports_bf16_conv())
    return conv_backward_data_bf16_onednn(dy, weight, dx, g);
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
  if (g.bf16 && dy.dtype() == DType::Float32 && supports_bf16_conv())
    return conv_backward_weight_bf16_onednn(x, dy, dweight, dbias, g);
  if (cpu::use_onednn(dy.dtype())) return conv_backward_weight_onednn(x, dy, dweight, dbias, g);
  IPSNET_DISPATCH_FLOAT(dy.dtype(), "conv2d_backward_weight",
                        [&] { conv_backward_weight_ref<scalar_t>(*this, x, dy, dweight, dbias, g); });
}

}  // namespace ipsnet

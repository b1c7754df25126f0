// CPU batch norm: threaded loops over engine/math/norm.h (float, double);
// oneDNN for float32 behind IPSNET_ONEDNN_BN=1 (slower here, see below).
// Accumulate rule: all outputs written (=); running stats updated in place.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/backend/cpu/cpu_onednn.h"
#include "engine/backend/cpu/parallel.h"
#include "engine/math/norm.h"

namespace ipsnet {

using cpu::kGrain;
using cpu::parallel_for;

namespace {

// x viewed as (N, C, S): channel c starts at x + c * S, runs of S every C * S.
int64_t row_grain(int64_t s) { return std::max<int64_t>(1, kGrain / std::max<int64_t>(s, 1)); }

template <typename T>
const T* opt_data(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// y = x * a[c] + b[c] over (N, C, S), parallel over (n, c) rows.
template <typename T>
void apply_scale_shift(const T* x, T* y, const std::vector<double>& a, const std::vector<double>& b,
                       const BatchNormGeometry& g) {
  parallel_for(g.n * g.c, row_grain(g.s), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t c = r % g.c;
      math::batch_norm_apply_channel<T>(x + r * g.s, y + r * g.s, 1, g.s, 0, T(a[c]), T(b[c]));
    }
  });
}

template <typename T>
void bn_training_ref(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                     const Tensor& save_mean, const Tensor& save_rstd, const Tensor& running_mean,
                     const Tensor& running_var, const BatchNormGeometry& g, double momentum,
                     double eps) {
  const T* xp = x.data<T>();
  const T *gp = opt_data<T>(gamma), *bp = opt_data<T>(beta);
  T *mp = save_mean.data<T>(), *rp = save_rstd.data<T>();
  T* rm = running_mean.defined() ? running_mean.data<T>() : nullptr;
  T* rv = running_var.defined() ? running_var.data<T>() : nullptr;
  std::vector<double> a(g.c), b(g.c);
  parallel_for(g.c, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t c = lo; c < hi; ++c) {
      double mean, var;
      math::batch_norm_channel_stats<T, double>(xp + c * g.s, g.n, g.s, g.c * g.s, &mean, &var);
      const double rstd = 1.0 / std::sqrt(var + eps);
      mp[c] = T(mean);
      rp[c] = T(rstd);
      if (rm && rv) math::batch_norm_update_running<T, double>(rm + c, rv + c, mean, var, g.count(), momentum);
      a[c] = rstd * (gp ? double(gp[c]) : 1.0);
      b[c] = (bp ? double(bp[c]) : 0.0) - mean * a[c];
    }
  });
  apply_scale_shift<T>(xp, y.data<T>(), a, b, g);
}

template <typename T>
void bn_inference_ref(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                      const Tensor& var, const Tensor& y, const BatchNormGeometry& g, double eps) {
  const T *gp = opt_data<T>(gamma), *bp = opt_data<T>(beta);
  const T *mp = mean.data<T>(), *vp = var.data<T>();
  std::vector<double> a(g.c), b(g.c);
  for (int64_t c = 0; c < g.c; ++c) {
    a[c] = (gp ? double(gp[c]) : 1.0) / std::sqrt(double(vp[c]) + eps);
    b[c] = (bp ? double(bp[c]) : 0.0) - double(mp[c]) * a[c];
  }
  apply_scale_shift<T>(x.data<T>(), y.data<T>(), a, b, g);
}

template <typename T>
void bn_backward_ref(const Tensor& x, const Tensor& gamma, const Tensor& dy, const Tensor& save_mean,
                     const Tensor& save_rstd, const Tensor& dx, const Tensor& dgamma,
                     const Tensor& dbeta, const BatchNormGeometry& g, bool stats_are_constant) {
  const T* xp = opt_data<T>(x);
  const T* gp = opt_data<T>(gamma);
  const T* dyp = dy.data<T>();
  const T *mp = save_mean.data<T>(), *rp = save_rstd.data<T>();
  const bool need_sums = dgamma.defined() || dbeta.defined() || (dx.defined() && !stats_are_constant);
  std::vector<double> sum_dy(g.c, 0.0), sum_dy_xh(g.c, 0.0);
  if (need_sums) {
    const T* xr = (dgamma.defined() || !stats_are_constant) ? xp : nullptr;
    parallel_for(g.c, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t c = lo; c < hi; ++c)
        math::batch_norm_backward_reduce<T, double>(xr ? xr + c * g.s : nullptr, dyp + c * g.s, g.n,
                                                    g.s, g.c * g.s, double(mp[c]), double(rp[c]),
                                                    &sum_dy[c], &sum_dy_xh[c]);
    });
  }
  if (dgamma.defined()) {
    T* p = dgamma.data<T>();
    for (int64_t c = 0; c < g.c; ++c) p[c] = T(sum_dy_xh[c]);
  }
  if (dbeta.defined()) {
    T* p = dbeta.data<T>();
    for (int64_t c = 0; c < g.c; ++c) p[c] = T(sum_dy[c]);
  }
  if (!dx.defined()) return;
  T* dxp = dx.data<T>();
  const double m = double(std::max<int64_t>(g.count(), 1));
  parallel_for(g.n * g.c, row_grain(g.s), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t c = r % g.c;
      // One (n, c) row with the channel's totals: the row is a run of the channel.
      math::batch_norm_backward_channel<T, double>(
          xp ? xp + r * g.s : nullptr, dyp + r * g.s, dxp + r * g.s, 1, g.s, 0, double(mp[c]),
          double(rp[c]), gp ? double(gp[c]) : 1.0, sum_dy[c] / m, sum_dy_xh[c] / m,
          stats_are_constant);
    }
  });
}

// ---- oneDNN ------------------------------------------------------------------
// Off by default: at the encoder's shapes oneDNN 2.6's plain-layout (ncsp)
// batch norm measured 5-7x slower than the loops above on 2 cores
// (bench_conv: bn1 on (1600, 64, 25, 25) forward 1013 vs 143 ms, backward 527
// vs 160 ms). IPSNET_ONEDNN_BN=1 turns it on (read on every call, so tests
// can compare both).
bool use_onednn_bn(DType dtype) {
  if (!cpu::use_onednn(dtype)) return false;
  const char* env = std::getenv("IPSNET_ONEDNN_BN");
  return env && std::string(env) == "1";
}


using dnnl::memory;
using tag = dnnl::memory::format_tag;
using nflags = dnnl::normalization_flags;

memory::dims data_dims(const BatchNormGeometry& g) { return {g.n, g.c, g.s, 1}; }
memory::desc data_md(const BatchNormGeometry& g) {
  return {data_dims(g), memory::data_type::f32, tag::nchw};
}
std::string geom_str(const BatchNormGeometry& g) { return str_cat("(", g.n, ", ", g.c, ", ", g.s, ")"); }

nflags make_flags(bool scale, bool shift, bool global) {
  nflags f = nflags::none;
  if (scale) f = f | nflags::use_scale;
  if (shift) f = f | nflags::use_shift;
  if (global) f = f | nflags::use_global_stats;
  return f;
}

struct BnFwd {
  dnnl::batch_normalization_forward prim;
};
struct BnBwd {
  dnnl::batch_normalization_backward prim;
};

std::shared_ptr<const BnFwd> bn_fwd_prim(const BatchNormGeometry& g, bool scale, bool shift,
                                         bool global, double eps) {
  return cpu::onednn_cached<BnFwd>(
      str_cat("bn_fwd ", geom_str(g), scale, shift, global, " eps ", eps), [&] {
        dnnl::batch_normalization_forward::desc d(
            global ? dnnl::prop_kind::forward_inference : dnnl::prop_kind::forward_training,
            data_md(g), static_cast<float>(eps), make_flags(scale, shift, global));
        return BnFwd{dnnl::batch_normalization_forward(
            dnnl::batch_normalization_forward::primitive_desc(d, cpu::onednn_engine()))};
      });
}

void bn_training_onednn(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                        const Tensor& save_mean, const Tensor& save_rstd,
                        const Tensor& running_mean, const Tensor& running_var,
                        const BatchNormGeometry& g, double momentum, double eps) {
  Tensor var = Tensor::empty({g.c}, DType::Float32);
  try {
    auto e = bn_fwd_prim(g, gamma.defined(), beta.defined(), false, eps);
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, cpu::wrap(x, data_dims(g), tag::nchw)},
                                         {DNNL_ARG_DST, cpu::wrap(y, data_dims(g), tag::nchw)},
                                         {DNNL_ARG_MEAN, cpu::wrap(save_mean, {g.c}, tag::x)},
                                         {DNNL_ARG_VARIANCE, cpu::wrap(var, {g.c}, tag::x)}};
    if (gamma.defined()) args.emplace(DNNL_ARG_SCALE, cpu::wrap(gamma, {g.c}, tag::x));
    if (beta.defined()) args.emplace(DNNL_ARG_SHIFT, cpu::wrap(beta, {g.c}, tag::x));
    cpu::onednn_run(e->prim, args);
  } catch (const dnnl::error& err) {
    cpu::onednn_fail("batch_norm_forward_training", geom_str(g), err);
  }
  const float* mp = save_mean.data<float>();
  const float* vp = var.data<float>();
  float* rp = save_rstd.data<float>();
  float* rm = running_mean.defined() ? running_mean.data<float>() : nullptr;
  float* rv = running_var.defined() ? running_var.data<float>() : nullptr;
  for (int64_t c = 0; c < g.c; ++c) {
    rp[c] = static_cast<float>(1.0 / std::sqrt(double(vp[c]) + eps));
    if (rm && rv)
      math::batch_norm_update_running<float, double>(rm + c, rv + c, mp[c], vp[c], g.count(), momentum);
  }
}

void bn_inference_onednn(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                         const Tensor& mean, const Tensor& var, const Tensor& y,
                         const BatchNormGeometry& g, double eps) {
  try {
    auto e = bn_fwd_prim(g, gamma.defined(), beta.defined(), true, eps);
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, cpu::wrap(x, data_dims(g), tag::nchw)},
                                         {DNNL_ARG_DST, cpu::wrap(y, data_dims(g), tag::nchw)},
                                         {DNNL_ARG_MEAN, cpu::wrap(mean, {g.c}, tag::x)},
                                         {DNNL_ARG_VARIANCE, cpu::wrap(var, {g.c}, tag::x)}};
    if (gamma.defined()) args.emplace(DNNL_ARG_SCALE, cpu::wrap(gamma, {g.c}, tag::x));
    if (beta.defined()) args.emplace(DNNL_ARG_SHIFT, cpu::wrap(beta, {g.c}, tag::x));
    cpu::onednn_run(e->prim, args);
  } catch (const dnnl::error& err) {
    cpu::onednn_fail("batch_norm_forward_inference", geom_str(g), err);
  }
}

// Training-mode backward (batch statistics) only.
void bn_backward_onednn(const Tensor& x, const Tensor& gamma, const Tensor& dy,
                        const Tensor& save_mean, const Tensor& save_rstd, const Tensor& dx,
                        const Tensor& dgamma, const Tensor& dbeta, const BatchNormGeometry& g,
                        double eps) {
  const bool scale = gamma.defined(), shift = dbeta.defined();
  // oneDNN takes the variance back: var = 1 / rstd^2 - eps.
  Tensor var = Tensor::empty({g.c}, DType::Float32);
  {
    const float* rp = save_rstd.data<float>();
    float* vp = var.data<float>();
    for (int64_t c = 0; c < g.c; ++c) vp[c] = static_cast<float>(1.0 / (double(rp[c]) * rp[c]) - eps);
  }
  // oneDNN writes every output it was built for; unwanted ones go to scratch.
  Tensor dxx = dx.defined() ? dx : Tensor::empty({g.n, g.c, g.s}, DType::Float32);
  // With either flag oneDNN 2.6 writes both diff_scale and diff_shift.
  auto out_or_scratch = [&](const Tensor& t) {
    return t.defined() ? t : Tensor::empty({g.c}, DType::Float32);
  };
  Tensor dg = (scale || shift) ? out_or_scratch(dgamma) : Tensor();
  Tensor db = (scale || shift) ? out_or_scratch(dbeta) : Tensor();
  // ... and expects both scale and shift memories (shift is not read). Kept
  // alive here: oneDNN memories only borrow the pointers.
  Tensor sc = scale ? gamma : ((scale || shift) ? Tensor::ones({g.c}, DType::Float32) : Tensor());
  Tensor sh = (scale || shift) ? Tensor::zeros({g.c}, DType::Float32) : Tensor();
  try {
    auto e = cpu::onednn_cached<BnBwd>(str_cat("bn_bwd ", geom_str(g), scale, shift, " eps ", eps), [&] {
      dnnl::batch_normalization_forward::desc fd(dnnl::prop_kind::forward_training, data_md(g),
                                                 static_cast<float>(eps), make_flags(scale, shift, false));
      dnnl::batch_normalization_forward::primitive_desc hint(fd, cpu::onednn_engine());
      dnnl::batch_normalization_backward::desc d(
          (scale || shift) ? dnnl::prop_kind::backward : dnnl::prop_kind::backward_data, data_md(g),
          data_md(g), static_cast<float>(eps), make_flags(scale, shift, false));
      return BnBwd{dnnl::batch_normalization_backward(
          dnnl::batch_normalization_backward::primitive_desc(d, cpu::onednn_engine(), hint))};
    });
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, cpu::wrap(x, data_dims(g), tag::nchw)},
                                         {DNNL_ARG_DIFF_DST, cpu::wrap(dy, data_dims(g), tag::nchw)},
                                         {DNNL_ARG_MEAN, cpu::wrap(save_mean, {g.c}, tag::x)},
                                         {DNNL_ARG_VARIANCE, cpu::wrap(var, {g.c}, tag::x)},
                                         {DNNL_ARG_DIFF_SRC, cpu::wrap(dxx, data_dims(g), tag::nchw)}};
    if (scale || shift) {
      args.emplace(DNNL_ARG_SCALE, cpu::wrap(sc, {g.c}, tag::x));
      args.emplace(DNNL_ARG_SHIFT, cpu::wrap(sh, {g.c}, tag::x));
      args.emplace(DNNL_ARG_DIFF_SCALE, cpu::wrap(dg, {g.c}, tag::x));
      args.emplace(DNNL_ARG_DIFF_SHIFT, cpu::wrap(db, {g.c}, tag::x));
    }
    cpu::onednn_run(e->prim, args);
  } catch (const dnnl::error& err) {
    cpu::onednn_fail("batch_norm_backward", geom_str(g), err);
  }
}

}  // namespace

void CpuBackend::batch_norm_forward_training(const Tensor& x, const Tensor& gamma,
                                             const Tensor& beta, const Tensor& y,
                                             const Tensor& save_mean, const Tensor& save_rstd,
                                             const Tensor& running_mean, const Tensor& running_var,
                                             const BatchNormGeometry& g, double momentum,
                                             double eps) {
  if (g.c == 0) return;
  if (g.count() > 0 && use_onednn_bn(x.dtype()))
    return bn_training_onednn(x, gamma, beta, y, save_mean, save_rstd, running_mean, running_var,
                              g, momentum, eps);
  IPSNET_DISPATCH_FLOAT(x.dtype(), "batch_norm_forward_training", [&] {
    bn_training_ref<scalar_t>(x, gamma, beta, y, save_mean, save_rstd, running_mean, running_var,
                              g, momentum, eps);
  });
}

void CpuBackend::batch_norm_forward_inference(const Tensor& x, const Tensor& gamma,
                                              const Tensor& beta, const Tensor& mean,
                                              const Tensor& var, const Tensor& y,
                                              const BatchNormGeometry& g, double eps) {
  if (g.c == 0 || g.count() == 0) return;
  if (use_onednn_bn(x.dtype())) return bn_inference_onednn(x, gamma, beta, mean, var, y, g, eps);
  IPSNET_DISPATCH_FLOAT(x.dtype(), "batch_norm_forward_inference", [&] {
    bn_inference_ref<scalar_t>(x, gamma, beta, mean, var, y, g, eps);
  });
}

void CpuBackend::batch_norm_backward(const Tensor& x, const Tensor& gamma, const Tensor& dy,
                                     const Tensor& save_mean, const Tensor& save_rstd,
                                     const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta,
                                     const BatchNormGeometry& g, bool stats_are_constant,
                                     double eps) {
  if (g.c == 0) return;
  // Constant statistics (eval) make backward a per-channel scale plus two
  // sums: memory bound, the threaded loops serve both dtypes.
  if (!stats_are_constant && g.count() > 0 && use_onednn_bn(dy.dtype()))
    return bn_backward_onednn(x, gamma, dy, save_mean, save_rstd, dx, dgamma, dbeta, g, eps);
  IPSNET_DISPATCH_FLOAT(dy.dtype(), "batch_norm_backward", [&] {
    bn_backward_ref<scalar_t>(x, gamma, dy, save_mean, save_rstd, dx, dgamma, dbeta, g,
                              stats_are_constant);
  });
}

}  // namespace ipsnet

// CPU pooling. Max pooling with indices (training) runs the threaded loops
// over engine/math/conv.h for both dtypes: the int64 argmax indices
// (PyTorch's convention) are what backward saves on every backend, and
// oneDNN's opaque workspace could not be shared with cuDNN. Without indices
// (inference, the IPS no-grad scoring pass), float32 goes through oneDNN.
// Accumulate rule: outputs written (=).
#include <algorithm>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/backend/cpu/cpu_onednn.h"
#include "engine/backend/cpu/parallel.h"
#include "engine/math/conv.h"

namespace ipsnet {

using cpu::kGrain;
using cpu::parallel_for;

namespace {

int64_t plane_grain(int64_t elems) { return std::max<int64_t>(1, kGrain / std::max<int64_t>(elems, 1)); }

template <typename T>
void max_pool_forward_ref(const Tensor& x, const Tensor& y, const Tensor& indices,
                          const Pool2dGeometry& g) {
  const T* xp = x.data<T>();
  T* yp = y.data<T>();
  int64_t* ip = indices.defined() ? indices.data<int64_t>() : nullptr;
  const int64_t in_plane = g.h * g.w, out_plane = g.ho * g.wo;
  parallel_for(g.n * g.c, plane_grain(out_plane * g.kh * g.kw), [&](int64_t lo, int64_t hi) {
    for (int64_t p = lo; p < hi; ++p) {
      const T* plane = xp + p * in_plane;
      for (int64_t oh = 0; oh < g.ho; ++oh)
        for (int64_t ow = 0; ow < g.wo; ++ow) {
          int64_t arg;
          const int64_t o = p * out_plane + oh * g.wo + ow;
          yp[o] = math::max_pool_window<T>(plane, g.h, g.w, oh, ow, g.kh, g.kw, g.sh, g.sw, g.ph,
                                           g.pw, &arg);
          if (ip) ip[o] = arg;
        }
    }
  });
}

template <typename T>
void max_pool_backward_ref(const Tensor& dy, const Tensor& indices, const Tensor& dx,
                           const Pool2dGeometry& g) {
  const T* dyp = dy.data<T>();
  const int64_t* ip = indices.data<int64_t>();
  T* dxp = dx.data<T>();
  const int64_t in_plane = g.h * g.w, out_plane = g.ho * g.wo;
  // One plane per task: a plane's indices only point into that plane.
  parallel_for(g.n * g.c, plane_grain(in_plane + out_plane), [&](int64_t lo, int64_t hi) {
    for (int64_t p = lo; p < hi; ++p) {
      T* d = dxp + p * in_plane;
      std::fill(d, d + in_plane, T(0));
      for (int64_t o = p * out_plane; o < (p + 1) * out_plane; ++o)
        if (ip[o] >= 0) d[ip[o]] += dyp[o];
    }
  });
}

struct PoolFwd {
  dnnl::pooling_forward prim;
};

void max_pool_inference_onednn(const Tensor& x, const Tensor& y, const Pool2dGeometry& g) {
  using tag = dnnl::memory::format_tag;
  const dnnl::memory::dims src{g.n, g.c, g.h, g.w}, dst{g.n, g.c, g.ho, g.wo};
  try {
    auto e = cpu::onednn_cached<PoolFwd>(str_cat("maxpool_inf ", g.str()), [&] {
      dnnl::pooling_forward::desc d(
          dnnl::prop_kind::forward_inference, dnnl::algorithm::pooling_max,
          {src, dnnl::memory::data_type::f32, tag::nchw}, {dst, dnnl::memory::data_type::f32, tag::nchw},
          {g.sh, g.sw}, {g.kh, g.kw}, {g.ph, g.pw}, {g.ph, g.pw});
      return PoolFwd{dnnl::pooling_forward(dnnl::pooling_forward::primitive_desc(d, cpu::onednn_engine()))};
    });
    cpu::onednn_run(e->prim, {{DNNL_ARG_SRC, cpu::wrap(x, src, tag::nchw)},
                              {DNNL_ARG_DST, cpu::wrap(y, dst, tag::nchw)}});
  } catch (const dnnl::error& err) {
    cpu::onednn_fail("max_pool2d_forward", g.str(), err);
  }
}

}  // namespace

void CpuBackend::max_pool2d_forward(const Tensor& x, const Tensor& y, const Tensor& indices,
                                    const Pool2dGeometry& g) {
  if (g.n * g.c * g.ho * g.wo == 0) return;
  if (!indices.defined() && cpu::use_onednn(x.dtype())) return max_pool_inference_onednn(x, y, g);
  IPSNET_DISPATCH_FLOAT(x.dtype(), "max_pool2d_forward",
                        [&] { max_pool_forward_ref<scalar_t>(x, y, indices, g); });
}

void CpuBackend::max_pool2d_backward(const Tensor& dy, const Tensor& indices, const Tensor& dx,
                                     const Pool2dGeometry& g) {
  if (g.n * g.c * g.h * g.w == 0) return;
  IPSNET_DISPATCH_FLOAT(dy.dtype(), "max_pool2d_backward",
                        [&] { max_pool_backward_ref<scalar_t>(dy, indices, dx, g); });
}

void CpuBackend::avg_pool2d_global_forward(const Tensor& x, const Tensor& y, int64_t planes,
                                           int64_t hw) {
  IPSNET_DISPATCH_FLOAT(x.dtype(), "avg_pool2d_global_forward", [&] {
    using T = scalar_t;
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    parallel_for(planes, plane_grain(hw), [&](int64_t lo, int64_t hi) {
      for (int64_t p = lo; p < hi; ++p) {
        double s = 0;
        for (int64_t i = 0; i < hw; ++i) s += double(xp[p * hw + i]);
        yp[p] = hw > 0 ? T(s / double(hw)) : T(NAN);
      }
    });
  });
}

void CpuBackend::avg_pool2d_global_backward(const Tensor& dy, const Tensor& dx, int64_t planes,
                                            int64_t hw) {
  IPSNET_DISPATCH_FLOAT(dy.dtype(), "avg_pool2d_global_backward", [&] {
    using T = scalar_t;
    const T* dyp = dy.data<T>();
    T* dxp = dx.data<T>();
    parallel_for(planes, plane_grain(hw), [&](int64_t lo, int64_t hi) {
      for (int64_t p = lo; p < hi; ++p) {
        const T v = dyp[p] / T(hw);
        std::fill(dxp + p * hw, dxp + (p + 1) * hw, v);
      }
    });
  });
}

}  // namespace ipsnet

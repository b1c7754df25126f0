// CPU patch extraction: the base implementation of Backend::cut_patches,
// a threaded loop over the body in engine/math/patches.h (the CUDA kernel
// in cuda/kernels/index.cu calls the same body). Output written (=).
#include <cstring>

#include "engine/backend/backend.h"
#include "engine/backend/cpu/parallel.h"
#include "engine/backend/geometry.h"

namespace ipsnet {

void Backend::cut_patches(const Tensor& image, const Tensor& index, const Tensor& out, int64_t ph, int64_t pw,
                          int64_t sh, int64_t sw) {
  IPSNET_CHECK(image.device().is_cpu() && index.device().is_cpu() && out.device().is_cpu(), "cut_patches: the ",
               name(), " backend has no implementation for ", image.device().str(), " tensors");
  IPSNET_CHECK(image.dim() == 4 && index.dim() == 2 && out.dim() == 5, "cut_patches: image ",
               shape_str(image.shape()), ", index ", shape_str(index.shape()), ", out ", shape_str(out.shape()),
               ": expected (B, C, H, W), (B, K), (B, K, C, ph, pw)");
  const int64_t b = image.size(0), c = image.size(1), h = image.size(2), w = image.size(3), k = index.size(1);
  const PatchGrid g = make_patch_grid(h, w, ph, pw, sh, sw);
  const int64_t count = g.count();
  const int64_t* ip = index.data<int64_t>();
  for (int64_t t = 0; t < b * k; ++t)
    IPSNET_CHECK(ip[t] >= 0 && ip[t] < count, "cut_patches: patch id ", ip[t], " outside the grid of ", count,
                 " patches");
  IPSNET_DISPATCH_ALL(image.dtype(), "cut_patches", [&] {
    using T = scalar_t;
    const T* src = image.data<T>();
    T* dst = out.data<T>();
    cpu::parallel_for(b * k * c, std::max<int64_t>(1, cpu::kGrain / std::max<int64_t>(ph * pw, 1)),
                      [&](int64_t lo, int64_t hi) {
                        for (int64_t r = lo; r < hi; ++r) {
                          const int64_t ch = r % c, bk = r / c, bi = bk / k;
                          const T* img = src + bi * c * h * w;
                          T* o = dst + r * ph * pw;
                          for (int64_t y = 0; y < ph; ++y)
                            for (int64_t x = 0; x < pw; ++x)
                              o[y * pw + x] = img[g.source_offset(ip[bk], ch, y, x)];
                        }
                      });
  });
}

}  // namespace ipsnet

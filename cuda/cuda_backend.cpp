// CUDA backend: host side of every primitive. Checks devices and dtypes, lays
// out strided operands, and calls the launchers of kernels/*.cu on the
// device's stream. Accumulate rule as the interface: outputs are written (=)
// except scatter_add / index_add (+=) and gemm with beta != 0.
#include "cuda/cuda_backend.h"

#include <cmath>
#include <cstring>

#include "cuda/kernels/kernels.h"
#include "engine/backend/cpu/strided.h"

namespace ipsnet {
namespace cuda {

CudaBackend& cuda_backend() {
  static CudaBackend* b = new CudaBackend();  // never destroyed: used by tensors at exit
  return *b;
}

int common_device(const char* op, std::initializer_list<const Tensor*> ts) {
  int dev = -1;
  for (const Tensor* t : ts) {
    if (!t->defined()) continue;
    IPSNET_CHECK(t->device().is_cuda(), op, ": expected CUDA tensors, got one on ", t->device().str());
    if (dev < 0) dev = t->device().index;
    IPSNET_CHECK(t->device().index == dev, op, ": tensors on cuda:", dev, " and ", t->device().str());
  }
  IPSNET_CHECK(dev >= 0, op, ": no CUDA tensor given");
  return dev;
}

void require_float32(const char* op, const Tensor& t) {
  if (!t.defined()) return;
  IPSNET_CHECK(t.dtype() == DType::Float32, op, ": the CUDA backend computes in float32, got ",
               dtype_name(t.dtype()), " (float64 math is CPU-only)");
}

bool devices_support_bf16() {
  static const bool all = [] {
    const int n = device_count();
    if (n == 0) return false;
    for (int d = 0; d < n; ++d) {
      int major = 0;
      if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, d) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
      }
      if (major < 8) return false;
    }
    return true;
  }();
  return all;
}

bool CudaBackend::supports_bf16_gemm() const { return devices_support_bf16(); }
bool CudaBackend::supports_bf16_conv() const { return devices_support_bf16(); }

namespace {

template <int K>
StridedGeom<K> make_geom(const char* op, const Shape& shape, const std::array<const Shape*, K>& strides) {
  cpu::StridedPlan<K> p = cpu::make_plan<K>(shape, strides);
  IPSNET_CHECK(p.shape.size() <= static_cast<size_t>(kMaxDims), op, ": ", p.shape.size(),
               " non-mergeable dimensions; the CUDA kernels take at most ", kMaxDims);
  StridedGeom<K> g;
  g.nd = static_cast<int>(p.shape.size());
  for (size_t d = 0; d < p.shape.size(); ++d) {
    g.shape[d] = p.shape[d];
    for (int k = 0; k < K; ++k) g.stride[k][d] = p.stride[d][static_cast<size_t>(k)];
  }
  return g;
}

template <typename T>
const T* cptr(const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }
template <typename T>
T* mptr(const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }

struct Scope {
  DeviceGuard guard;
  CudaContext& ctx;
  explicit Scope(int dev) : guard(dev), ctx(context(dev)) {}
};

}  // namespace

void CudaBackend::synchronize() {
  // Only devices that were used: a context on every visible GPU would cost
  // handles, a workspace and pinned staging on each.
  synchronize_used_devices();
}

// ---- memory -------------------------------------------------------------------------

void CudaBackend::copy(const Tensor& src, const Tensor& dst) {
  Scope s(common_device("copy", {&src, &dst}));
  const bool contiguous = src.is_contiguous() && dst.is_contiguous();
  StridedGeom<2> g;
  if (!contiguous) g = make_geom<2>("copy", dst.shape(), {&src.strides(), &dst.strides()});
  copy_cuda(s.ctx, src.dtype(), src.raw_data(), dst.dtype(), dst.raw_data(), g, dst.numel(), contiguous);
}

void CudaBackend::copy_across(const Tensor& src, const Tensor& dst) {
  IPSNET_CHECK(src.dtype() == dst.dtype() && src.numel() == dst.numel() && src.is_contiguous() &&
                   dst.is_contiguous(),
               "copy_across: expects contiguous tensors of one dtype and size, got ", dtype_name(src.dtype()),
               " ", shape_str(src.shape()), " and ", dtype_name(dst.dtype()), " ", shape_str(dst.shape()));
  const size_t nbytes = src.nbytes();
  if (nbytes == 0) return;
  const Device sd = src.device(), dd = dst.device();
  if (sd.is_cpu() && dd.is_cpu()) {
    std::memcpy(dst.raw_data(), src.raw_data(), nbytes);
    return;
  }
  if (sd.is_cuda() && dd.is_cuda()) {
    if (sd.index == dd.index) {
      copy(src, dst);
      return;
    }
    // Between devices: order after the source's queued work, then the peer copy
    // on the destination's stream, then wait (the source may be freed next).
    cuda::synchronize(sd.index);
    Scope s(dd.index);
    IPSNET_CUDA_CHECK(cudaMemcpyPeerAsync(dst.raw_data(), dd.index, src.raw_data(), sd.index, nbytes, s.ctx.stream));
    IPSNET_CUDA_CHECK(cudaStreamSynchronize(s.ctx.stream));
    check_index_errors(s.ctx);
    return;
  }
  const bool to_device = dd.is_cuda();
  Scope s(to_device ? dd.index : sd.index);
  CudaContext& ctx = s.ctx;
  char* host = static_cast<char*>(to_device ? src.raw_data() : dst.raw_data());
  char* dev = static_cast<char*>(to_device ? dst.raw_data() : src.raw_data());

  // Host memory that is already page-locked (e.g. lazy-mode patch buffers) is copied directly.
  cudaPointerAttributes attr;
  if (cudaPointerGetAttributes(&attr, host) == cudaSuccess && attr.type == cudaMemoryTypeHost) {
    IPSNET_CUDA_CHECK(cudaMemcpyAsync(to_device ? dev : host, to_device ? host : dev, nbytes,
                                      to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost, ctx.stream));
    // Synchronous for the caller: the host buffer may be reused as soon as we return.
    IPSNET_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
    // Data that reached the host is what a caller inspects: an index error
    // recorded by an earlier launch is reported before it is used.
    if (!to_device) check_index_errors(ctx);
    return;
  }
  (void)cudaGetLastError();

  // Pageable memory goes through the two pinned staging buffers: while the DMA
  // engine moves one chunk, the host copies the next into the other buffer.
  std::lock_guard<std::mutex> lock(ctx.transfer_mu);
  const size_t chunk = CudaContext::kStagingBytes;
  if (to_device) {
    int b = 0;
    for (size_t off = 0; off < nbytes; off += chunk, b ^= 1) {
      const size_t len = std::min(chunk, nbytes - off);
      IPSNET_CUDA_CHECK(cudaEventSynchronize(ctx.staging_done[b]));  // buffer b free again
      std::memcpy(ctx.staging[b].data(), host + off, len);
      IPSNET_CUDA_CHECK(cudaMemcpyAsync(dev + off, ctx.staging[b].data(), len, cudaMemcpyHostToDevice, ctx.stream));
      IPSNET_CUDA_CHECK(cudaEventRecord(ctx.staging_done[b], ctx.stream));
    }
    // No wait here: the source is already in staging memory, and later work on
    // the stream is ordered after the copies.
  } else {
    size_t pending_off = 0, pending_len = 0;
    int pending_b = -1, b = 0;
    for (size_t off = 0; off < nbytes; off += chunk, b ^= 1) {
      const size_t len = std::min(chunk, nbytes - off);
      IPSNET_CUDA_CHECK(cudaMemcpyAsync(ctx.staging[b].data(), dev + off, len, cudaMemcpyDeviceToHost, ctx.stream));
      IPSNET_CUDA_CHECK(cudaEventRecord(ctx.staging_done[b], ctx.stream));
      if (pending_b >= 0) {
        IPSNET_CUDA_CHECK(cudaEventSynchronize(ctx.staging_done[pending_b]));
        std::memcpy(host + pending_off, ctx.staging[pending_b].data(), pending_len);
      }
      pending_b = b;
      pending_off = off;
      pending_len = len;
    }
    IPSNET_CUDA_CHECK(cudaEventSynchronize(ctx.staging_done[pending_b]));
    std::memcpy(host + pending_off, ctx.staging[pending_b].data(), pending_len);
    check_index_errors(ctx);  // (see above)
  }
}

void CudaBackend::fill(const Tensor& dst, double value) {
  Scope s(common_device("fill", {&dst}));
  const bool contiguous = dst.is_contiguous();
  StridedGeom<1> g;
  if (!contiguous) g = make_geom<1>("fill", dst.shape(), {&dst.strides()});
  fill_cuda(s.ctx, dst.dtype(), dst.raw_data(), value, g, dst.numel(), contiguous);
}

// ---- elementwise ----------------------------------------------------------------------

void CudaBackend::unary(math::UnaryOp op, const Tensor& x, const Tensor& y, double alpha) {
  Scope s(common_device("unary", {&x, &y}));
  require_float32("unary", x);
  require_float32("unary", y);
  unary_cuda(s.ctx, op, x.data<float>(), y.data<float>(), x.numel(), static_cast<float>(alpha));
}

void CudaBackend::unary_backward(math::UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy,
                                 const Tensor& dx, double alpha) {
  Scope s(common_device("unary_backward", {&x, &y, &dy, &dx}));
  for (const Tensor* t : {&x, &y, &dy, &dx}) require_float32("unary_backward", *t);
  unary_backward_cuda(s.ctx, op, cptr<float>(x), cptr<float>(y), dy.data<float>(), dx.data<float>(), dy.numel(),
                      static_cast<float>(alpha));
}

void CudaBackend::binary(math::BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  Scope s(common_device("binary", {&a, &b, &out}));
  IPSNET_CHECK(a.dtype() == out.dtype() && b.dtype() == out.dtype(), "binary: dtypes ", dtype_name(a.dtype()),
               ", ", dtype_name(b.dtype()), " -> ", dtype_name(out.dtype()), " differ");
  const bool contiguous = a.is_contiguous() && b.is_contiguous() && out.is_contiguous();
  StridedGeom<3> g;
  if (!contiguous) g = make_geom<3>("binary", out.shape(), {&a.strides(), &b.strides(), &out.strides()});
  binary_cuda(s.ctx, op, out.dtype(), a.raw_data(), b.raw_data(), out.raw_data(), g, out.numel(), contiguous);
}

void CudaBackend::masked_fill(const Tensor& x, const Tensor& mask, double value, const Tensor& out) {
  Scope s(common_device("masked_fill", {&x, &mask, &out}));
  StridedGeom<3> g = make_geom<3>("masked_fill", out.shape(), {&x.strides(), &mask.strides(), &out.strides()});
  masked_fill_cuda(s.ctx, out.dtype(), x.raw_data(), mask.dtype(), mask.raw_data(), value, out.raw_data(), g,
                   out.numel());
}

// ---- reductions ----------------------------------------------------------------------------

void CudaBackend::reduce(ReduceOp op, const Tensor& x, int64_t outer, int64_t n, int64_t inner, const Tensor& out,
                         const Tensor& argidx) {
  Scope s(common_device("reduce", {&x, &out, &argidx}));
  reduce_cuda(s.ctx, op, x.dtype(), x.raw_data(), outer, n, inner, out.raw_data(), mptr<int64_t>(argidx));
}

// ---- softmax / layer norm --------------------------------------------------------------------

void CudaBackend::softmax(const Tensor& x, const Tensor& y, int64_t outer, int64_t n, int64_t inner, bool log) {
  Scope s(common_device("softmax", {&x, &y}));
  require_float32("softmax", x);
  softmax_cuda(s.ctx, x.data<float>(), y.data<float>(), outer, n, inner, log);
}

void CudaBackend::softmax_backward(const Tensor& y, const Tensor& dy, const Tensor& dx, int64_t outer, int64_t n,
                                   int64_t inner, bool log) {
  Scope s(common_device("softmax_backward", {&y, &dy, &dx}));
  require_float32("softmax_backward", y);
  softmax_backward_cuda(s.ctx, y.data<float>(), dy.data<float>(), dx.data<float>(), outer, n, inner, log);
}

void CudaBackend::layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                             const Tensor& mean, const Tensor& rstd, int64_t rows, int64_t n, double eps) {
  Scope s(common_device("layer_norm", {&x, &gamma, &beta, &y, &mean, &rstd}));
  require_float32("layer_norm", x);
  layer_norm_cuda(s.ctx, x.data<float>(), cptr<float>(gamma), cptr<float>(beta), y.data<float>(),
                  mean.data<float>(), rstd.data<float>(), rows, n, static_cast<float>(eps));
}

void CudaBackend::layer_norm_backward(const Tensor& x, const Tensor& gamma, const Tensor& dy, const Tensor& mean,
                                      const Tensor& rstd, const Tensor& dx, const Tensor& dgamma,
                                      const Tensor& dbeta, int64_t rows, int64_t n) {
  Scope s(common_device("layer_norm_backward", {&x, &gamma, &dy, &mean, &rstd, &dx, &dgamma, &dbeta}));
  require_float32("layer_norm_backward", x);
  layer_norm_backward_cuda(s.ctx, x.data<float>(), cptr<float>(gamma), dy.data<float>(), mean.data<float>(),
                           rstd.data<float>(), dx.data<float>(), mptr<float>(dgamma), mptr<float>(dbeta), rows, n);
}

// ---- indexing -------------------------------------------------------------------------------------

void CudaBackend::gather(const Tensor& x, const Tensor& index, const Tensor& out, int64_t outer, int64_t n,
                         int64_t k, int64_t inner) {
  Scope s(common_device("gather", {&x, &index, &out}));
  gather_cuda(s.ctx, x.dtype(), x.raw_data(), index.data<int64_t>(), out.raw_data(), outer, n, k, inner);
}

void CudaBackend::scatter_add(const Tensor& src, const Tensor& index, const Tensor& out, int64_t outer, int64_t n,
                              int64_t k, int64_t inner) {
  Scope s(common_device("scatter_add", {&src, &index, &out}));
  scatter_add_cuda(s.ctx, src.dtype(), src.raw_data(), index.data<int64_t>(), out.raw_data(), outer, n, k, inner);
}

void CudaBackend::index_select(const Tensor& x, const Tensor& index, const Tensor& out, int64_t outer, int64_t n,
                               int64_t k, int64_t inner) {
  Scope s(common_device("index_select", {&x, &index, &out}));
  index_select_cuda(s.ctx, x.dtype(), x.raw_data(), index.data<int64_t>(), out.raw_data(), outer, n, k, inner);
}

void CudaBackend::index_add(const Tensor& src, const Tensor& index, const Tensor& out, int64_t outer, int64_t n,
                            int64_t k, int64_t inner) {
  Scope s(common_device("index_add", {&src, &index, &out}));
  index_add_cuda(s.ctx, src.dtype(), src.raw_data(), index.data<int64_t>(), out.raw_data(), outer, n, k, inner);
}

void CudaBackend::topk(const Tensor& x, const Tensor& values, const Tensor& indices, int64_t rows, int64_t n,
                       int64_t k, bool largest) {
  Scope s(common_device("topk", {&x, &values, &indices}));
  topk_cuda(s.ctx, x.dtype(), x.raw_data(), values.raw_data(), indices.data<int64_t>(), rows, n, k, largest);
}

// ---- random / optimizer -----------------------------------------------------------------------------

void CudaBackend::dropout_mask(const Tensor& mask, double p, uint64_t seed, uint64_t stream, uint64_t offset) {
  Scope s(common_device("dropout_mask", {&mask}));
  require_float32("dropout_mask", mask);
  dropout_mask_cuda(s.ctx, mask.data<float>(), mask.numel(), static_cast<float>(p), seed, stream, offset);
}

void CudaBackend::adamw(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, double lr,
                        double beta1, double beta2, double eps, double weight_decay, int64_t step) {
  Scope s(common_device("adamw", {&p, &g, &m, &v}));
  for (const Tensor* t : {&p, &g, &m, &v}) require_float32("adamw", *t);
  // Bias corrections exactly as the CPU backend computes them.
  const float c1 = static_cast<float>(1.0 - std::pow(beta1, static_cast<double>(step)));
  const float c2 = static_cast<float>(1.0 - std::pow(beta2, static_cast<double>(step)));
  adamw_cuda(s.ctx, p.data<float>(), g.data<float>(), m.data<float>(), v.data<float>(), p.numel(),
             static_cast<float>(lr), static_cast<float>(beta1), static_cast<float>(beta2), static_cast<float>(eps),
             static_cast<float>(weight_decay), c1, c2);
}

}  // namespace cuda
}  // namespace ipsnet

// ---- batch norm / pooling (kernels/norm_pool.cu) ----------------------------------------------------

namespace ipsnet {
namespace cuda {

void CudaBackend::batch_norm_forward_training(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                              const Tensor& y, const Tensor& save_mean, const Tensor& save_rstd,
                                              const Tensor& running_mean, const Tensor& running_var,
                                              const BatchNormGeometry& g, double momentum, double eps) {
  Scope s(common_device("batch_norm_forward_training",
                        {&x, &gamma, &beta, &y, &save_mean, &save_rstd, &running_mean, &running_var}));
  for (const Tensor* t : {&x, &gamma, &beta, &y, &save_mean, &save_rstd, &running_mean, &running_var})
    require_float32("batch_norm_forward_training", *t);
  batch_norm_training_cuda(s.ctx, x.data<float>(), cptr<float>(gamma), cptr<float>(beta), y.data<float>(),
                           save_mean.data<float>(), save_rstd.data<float>(), mptr<float>(running_mean),
                           mptr<float>(running_var), g.n, g.c, g.s, momentum, eps);
}

void CudaBackend::batch_norm_forward_inference(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                               const Tensor& mean, const Tensor& var, const Tensor& y,
                                               const BatchNormGeometry& g, double eps) {
  Scope s(common_device("batch_norm_forward_inference", {&x, &gamma, &beta, &mean, &var, &y}));
  for (const Tensor* t : {&x, &gamma, &beta, &mean, &var, &y}) require_float32("batch_norm_forward_inference", *t);
  batch_norm_inference_cuda(s.ctx, x.data<float>(), cptr<float>(gamma), cptr<float>(beta), mean.data<float>(),
                            var.data<float>(), y.data<float>(), g.n, g.c, g.s, eps);
}

void CudaBackend::batch_norm_backward(const Tensor& x, const Tensor& gamma, const Tensor& dy, const Tensor& save_mean,
                                      const Tensor& save_rstd, const Tensor& dx, const Tensor& dgamma,
                                      const Tensor& dbeta, const BatchNormGeometry& g, bool stats_are_constant,
                                      double eps) {
  Scope s(common_device("batch_norm_backward", {&x, &gamma, &dy, &save_mean, &save_rstd, &dx, &dgamma, &dbeta}));
  for (const Tensor* t : {&x, &gamma, &dy, &save_mean, &save_rstd, &dx, &dgamma, &dbeta})
    require_float32("batch_norm_backward", *t);
  batch_norm_backward_cuda(s.ctx, cptr<float>(x), cptr<float>(gamma), dy.data<float>(), save_mean.data<float>(),
                           save_rstd.data<float>(), mptr<float>(dx), mptr<float>(dgamma), mptr<float>(dbeta), g.n,
                           g.c, g.s, stats_are_constant);
}

void CudaBackend::max_pool2d_forward(const Tensor& x, const Tensor& y, const Tensor& indices,
                                     const Pool2dGeometry& g) {
  Scope s(common_device("max_pool2d_forward", {&x, &y, &indices}));
  require_float32("max_pool2d_forward", x);
  max_pool2d_forward_cuda(s.ctx, x.data<float>(), y.data<float>(), mptr<int64_t>(indices), g);
}

void CudaBackend::max_pool2d_backward(const Tensor& dy, const Tensor& indices, const Tensor& dx,
                                      const Pool2dGeometry& g) {
  Scope s(common_device("max_pool2d_backward", {&dy, &indices, &dx}));
  require_float32("max_pool2d_backward", dy);
  max_pool2d_backward_cuda(s.ctx, dy.data<float>(), indices.data<int64_t>(), dx.data<float>(), g);
}

void CudaBackend::avg_pool2d_global_forward(const Tensor& x, const Tensor& y, int64_t planes, int64_t hw) {
  Scope s(common_device("avg_pool2d_global_forward", {&x, &y}));
  require_float32("avg_pool2d_global_forward", x);
  // The CPU's formula: double sum / hw per plane, i.e. a Mean over rows.
  reduce_cuda(s.ctx, ReduceOp::Mean, DType::Float32, x.raw_data(), planes, hw, 1, y.raw_data(), nullptr);
}

void CudaBackend::avg_pool2d_global_backward(const Tensor& dy, const Tensor& dx, int64_t planes, int64_t hw) {
  Scope s(common_device("avg_pool2d_global_backward", {&dy, &dx}));
  require_float32("avg_pool2d_global_backward", dy);
  avg_pool2d_global_backward_cuda(s.ctx, dy.data<float>(), dx.data<float>(), planes, hw);
}

}  // namespace cuda
}  // namespace ipsnet

namespace ipsnet {
namespace cuda {

void CudaBackend::cut_patches(const Tensor& image, const Tensor& index, const Tensor& out, int64_t ph, int64_t pw,
                              int64_t sh, int64_t sw) {
  Scope s(common_device("cut_patches", {&image, &index, &out}));
  IPSNET_CHECK(image.dim() == 4 && index.dim() == 2 && out.dim() == 5, "cut_patches: image ",
               shape_str(image.shape()), ", index ", shape_str(index.shape()), ", out ", shape_str(out.shape()),
               ": expected (B, C, H, W), (B, K), (B, K, C, ph, pw)");
  const int64_t b = image.size(0), c = image.size(1), h = image.size(2), w = image.size(3), k = index.size(1);
  (void)make_patch_grid(h, w, ph, pw, sh, sw);  // throws when the patch does not fit
  cut_patches_cuda(s.ctx, image.dtype(), image.raw_data(), index.data<int64_t>(), out.raw_data(), b, c, h, w, k, ph,
                   pw, sh, sw);
}

}  // namespace cuda
}  // namespace ipsnet

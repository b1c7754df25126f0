// Convolution through cuDNN (legacy convolution API of cuDNN 9):
// forward, backward data, backward filter (+ bias through cudnnAddTensor and
// cudnnConvolutionBackwardBias). NCHW float32, OIHW weights, cross-correlation
// (PyTorch's convolution).
//
// Algorithm choice, once per shape key (ConvAlgoKey): the heuristics
// (cudnnGet*Algorithm_v7) list the candidates and their workspaces; then
// cudnnFind*AlgorithmEx times them with a workspace no larger than the biggest
// candidate under the cap (BackendOptions::conv_workspace_limit_bytes). That
// timing workspace is a one-off cudaMalloc, freed right after the timing: it
// is not a tensor, so it stays out of the allocated statistics (the peak that
// IPS reports) and out of the cache, where nothing would reuse it. If it
// cannot be had, the heuristic order is kept. Execution walks the cached list
// and skips a candidate whose workspace (from the counted allocator) cannot be
// had, down to the zero-workspace algorithms; only an out-of-memory error
// moves on to the next candidate, any other error is thrown.
// Empty problems follow the CPU backend: no input channels (C == 0) gives
// y = bias (or 0) and dbias = sum of dy; no output positions give zero
// gradients.
// TF32: off by default (CUDNN_FMA_MATH: FMA kernels only); with allow_tf32
// each algorithm runs with the math type cuDNN reported for it.
// Accumulate rule: y, dx, dweight, dbias are written (beta = 0); the bias is
// then added to y (beta = 1).
//
// bfloat16 (Conv2dGeometry::bf16, precision: bf16 or selection_bf16, on
// devices of compute capability >= 8.0): the same three passes with cuDNN's
// bfloat16 configuration (x, w, y descriptors CUDNN_DATA_BFLOAT16, the
// convolution's compute type CUDNN_DATA_FLOAT: float32 accumulation, tensor-op
// math allowed and each algorithm run with the math type cuDNN reported). The
// float32 operands are rounded to bfloat16 on the device into workspaces from
// the caching allocator (cuda/kernels/bf16.cu); the legacy API writes its
// output in the operands' type, so y, dx and dweight come back as bfloat16
// and are widened to the float32 tensors (one extra rounding of each output,
// relative 2^-8, as PyTorch's autocast has). The bias is added and dbias
// summed in float32 from the float32 dy. bfloat16 is part of the algorithm
// cache key, and its candidates are the GEMM-like algorithms only
// (sums_exact_products below).
#include <algorithm>
#include <climits>
#include <vector>

#include "cuda/cuda_backend.h"
#include "cuda/cudnn/algo_cache.h"
#include "cuda/kernels/kernels.h"
#include "engine/backend/device_select.h"

namespace ipsnet {
namespace cuda {

namespace {

/// One NCHW float32 tensor descriptor.
struct TensorDescriptor {
  cudnnTensorDescriptor_t d = nullptr;
  TensorDescriptor(int n, int c, int h, int w) {
    IPSNET_CUDA_CHECK(cudnnCreateTensorDescriptor(&d));
    const cudnnStatus_t st = cudnnSetTensor4dDescriptor(d, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, c, h, w);
    if (st != CUDNN_STATUS_SUCCESS) (void)cudnnDestroyTensorDescriptor(d);
    IPSNET_CUDA_CHECK(st);
  }
  ~TensorDescriptor() {
    if (d) (void)cudnnDestroyTensorDescriptor(d);
  }
  TensorDescriptor(const TensorDescriptor&) = delete;
  TensorDescriptor& operator=(const TensorDescriptor&) = delete;
};

struct ConvDescriptors {
  // x, y, w in the operands' type (float32 or bfloat16); y_f32 and bias are
  // float32 (the bias add and dbias); y_f32 is y itself in float32.
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, y_f32_own = nullptr, bias = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;

  ConvDescriptors(const CudnnConvParams& p, bool tf32, bool bf16) {
    const cudnnDataType_t dt = bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    IPSNET_CUDA_CHECK(cudnnCreateTensorDescriptor(&x));
    IPSNET_CUDA_CHECK(cudnnCreateTensorDescriptor(&y));
    IPSNET_CUDA_CHECK(cudnnCreateTensorDescriptor(&bias));
    IPSNET_CUDA_CHECK(cudnnCreateFilterDescriptor(&w));
    IPSNET_CUDA_CHECK(cudnnCreateConvolutionDescriptor(&conv));
    IPSNET_CUDA_CHECK(cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NCHW, dt, p.n, p.c, p.h, p.w));
    IPSNET_CUDA_CHECK(cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NCHW, dt, p.n, p.o, p.ho, p.wo));
    IPSNET_CUDA_CHECK(cudnnSetTensor4dDescriptor(bias, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, p.o, 1, 1));
    IPSNET_CUDA_CHECK(cudnnSetFilter4dDescriptor(w, dt, CUDNN_TENSOR_NCHW, p.o, p.c, p.kh, p.kw));
    if (bf16) {
      IPSNET_CUDA_CHECK(cudnnCreateTensorDescriptor(&y_f32_own));
      IPSNET_CUDA_CHECK(
          cudnnSetTensor4dDescriptor(y_f32_own, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, p.n, p.o, p.ho, p.wo));
    }
    // Compute type float in both: float32 accumulation (bfloat16 inputs).
    IPSNET_CUDA_CHECK(cudnnSetConvolution2dDescriptor(conv, p.ph, p.pw, p.sh, p.sw, p.dh, p.dw,
                                                      CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    IPSNET_CUDA_CHECK(cudnnSetConvolutionMathType(
        conv, bf16 ? CUDNN_TENSOR_OP_MATH : (tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH)));
    // The output size cuDNN derives must be the one the op allocated.
    int on = 0, oc = 0, oh = 0, ow = 0;
    IPSNET_CUDA_CHECK(cudnnGetConvolution2dForwardOutputDim(conv, x, w, &on, &oc, &oh, &ow));
    IPSNET_CHECK(on == p.n && oc == p.o && oh == p.ho && ow == p.wo, "conv2d: cuDNN computes output (", on, ", ",
                 oc, ", ", oh, ", ", ow, ") but the op allocated (", p.n, ", ", p.o, ", ", p.ho, ", ", p.wo, ")");
  }
  ~ConvDescriptors() {
    if (conv) (void)cudnnDestroyConvolutionDescriptor(conv);
    if (w) (void)cudnnDestroyFilterDescriptor(w);
    if (bias) (void)cudnnDestroyTensorDescriptor(bias);
    if (y_f32_own) (void)cudnnDestroyTensorDescriptor(y_f32_own);
    if (y) (void)cudnnDestroyTensorDescriptor(y);
    if (x) (void)cudnnDestroyTensorDescriptor(x);
  }
  ConvDescriptors(const ConvDescriptors&) = delete;
  ConvDescriptors& operator=(const ConvDescriptors&) = delete;
  /// The float32 descriptor of y's shape (the bias add, dbias).
  cudnnTensorDescriptor_t y_f32() const { return y_f32_own ? y_f32_own : y; }
};

/// The device operands of one cuDNN call: the float32 tensors themselves, or
/// (bfloat16) rounded copies of the inputs and a bfloat16 buffer for the
/// output, widened into the float32 output by finish().
class ConvOperands {
 public:
  ConvOperands(CudaContext& ctx, bool bf16) : ctx_(ctx), bf16_(bf16) {}
  /// An input of numel elements.
  const void* in(const Tensor& t, int64_t numel) {
    if (!bf16_) return t.data<float>();
    bufs_.push_back(bf16_copy(ctx_, t.data<float>(), numel));
    return bufs_.back().data();
  }
  /// The output (numel elements); with bf16 a scratch buffer until finish().
  void* out(const Tensor& t, int64_t numel) {
    out_ = t;
    out_numel_ = numel;
    if (!bf16_) return t.data<float>();
    bufs_.emplace_back(*ctx_.allocator, static_cast<size_t>(numel) * kBf16Bytes);
    out_buf_ = bufs_.back().data();
    return out_buf_;
  }
  /// Widens the bfloat16 output into the float32 tensor (queued on the stream).
  void finish() {
    if (bf16_ && out_buf_) bf16_to_float_cuda(ctx_, out_buf_, out_.data<float>(), out_numel_);
  }

 private:
  CudaContext& ctx_;
  bool bf16_;
  std::vector<ScopedDeviceBuffer> bufs_;
  Tensor out_;
  int64_t out_numel_ = 0;
  void* out_buf_ = nullptr;
};

/// Successful results under the cap, in cuDNN's order (fastest first).
template <typename Perf>
ConvAlgoList usable(const std::vector<Perf>& perf, int count, size_t cap) {
  ConvAlgoList out;
  for (int i = 0; i < count; ++i) {
    const Perf& r = perf[static_cast<size_t>(i)];
    if (r.status != CUDNN_STATUS_SUCCESS || r.memory > cap) continue;
    out.push_back({static_cast<int>(r.algo), r.memory, static_cast<int>(r.mathType)});
  }
  return out;
}

/// Whether an algorithm sums exact products of the operands in its compute
/// type (the GEMM-like ones). In bfloat16 only these are used: their error
/// is the bound of tests/engine/test_bf16.cpp (products of two bfloat16
/// values are exact in float32), while the FFT and Winograd algorithms
/// transform the rounded operands first, with an error of their own.
bool sums_exact_products(ConvPass pass, int algo) {
  switch (pass) {
    case ConvPass::Forward:
      return algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM ||
             algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM || algo == CUDNN_CONVOLUTION_FWD_ALGO_GEMM ||
             algo == CUDNN_CONVOLUTION_FWD_ALGO_DIRECT;
    case ConvPass::BackwardData:
      return algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0 || algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
    case ConvPass::BackwardFilter:
      return algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 || algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 ||
             algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3;
  }
  return false;
}

/// The bfloat16 key's candidates restricted to sums_exact_products (kept
/// whole if none of them is one: running beats refusing).
ConvAlgoList restrict_bf16(const ConvAlgoKey& key, ConvAlgoList l) {
  if (!key.bf16) return l;
  ConvAlgoList exact;
  for (const ConvAlgoChoice& c : l)
    if (sums_exact_products(key.pass, c.algo)) exact.push_back(c);
  return exact.empty() ? l : exact;
}

size_t max_workspace(const ConvAlgoList& l) {
  size_t m = 0;
  for (const auto& c : l) m = std::max(m, c.workspace);
  return m;
}

/// The workspace of one algorithm search: plain cudaMalloc / cudaFree, not
/// the counted allocator (see the top of this file). Null when the device
/// has no room (the search then keeps the heuristic order).
class TimingWorkspace {
 public:
  TimingWorkspace(CudaContext& ctx, size_t nbytes) : device_(ctx.device) {
    if (nbytes == 0) return;
    cudaError_t e = cudaMalloc(&data_, nbytes);
    if (e == cudaErrorMemoryAllocation) {
      // The free memory may sit in the allocator's cache: give it back once.
      (void)cudaGetLastError();  // not sticky
      ctx.allocator->empty_cache();
      e = cudaMalloc(&data_, nbytes);
    }
    if (e == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      data_ = nullptr;
      return;
    }
    IPSNET_CUDA_CHECK(e);
  }
  ~TimingWorkspace() {
    // cudaFree waits for the timing runs queued on the stream to finish
    // (they are done anyway: cudnnFind*Ex returns after timing).
    if (data_) {
      DeviceGuard g(device_);
      (void)cudaFree(data_);
    }
  }
  TimingWorkspace(const TimingWorkspace&) = delete;
  TimingWorkspace& operator=(const TimingWorkspace&) = delete;
  void* data() const { return data_; }

 private:
  int device_;
  void* data_ = nullptr;
};

/// Heuristic list, then timed list (when a workspace for timing can be had).
/// `get(count, perf*) -> returned`, `find(count, perf*, ws, ws_bytes) -> returned`.
template <typename Perf, typename Get, typename Find>
ConvAlgoList choose(const ConvAlgoKey& key, CudaContext& ctx, int max_count, size_t cap, Get&& get, Find&& find) {
  std::vector<Perf> perf(static_cast<size_t>(std::max(max_count, 1)));
  int returned = get(static_cast<int>(perf.size()), perf.data());
  ConvAlgoList heuristic = restrict_bf16(key, usable(perf, returned, cap));
  IPSNET_CHECK(!heuristic.empty(), "cuDNN offers no ", conv_pass_name(key.pass), " algorithm within the ",
               cap >> 20, " MiB workspace cap for ", key.str());
  const size_t ws_bytes = max_workspace(heuristic);
  TimingWorkspace ws(ctx, ws_bytes);
  if (ws_bytes > 0 && !ws.data()) return heuristic;  // no room to time them: trust the heuristics
  returned = find(static_cast<int>(perf.size()), perf.data(), ws.data(), ws_bytes);
  ConvAlgoList timed = restrict_bf16(key, usable(perf, returned, std::min(cap, ws_bytes)));
  return timed.empty() ? heuristic : timed;
}

/// Runs `run(algo, math, ws, ws_bytes)` with the first candidate whose workspace can be allocated.
template <typename Run>
void run_with_fallback(const ConvAlgoKey& key, CudaContext& ctx, const ConvDescriptors& d, const ConvAlgoList& list,
                       Run&& run) {
  for (const ConvAlgoChoice& ch : list) {
    ScopedDeviceBuffer ws;
    if (ch.workspace > 0) {
      try {
        ws = ScopedDeviceBuffer(*ctx.allocator, ch.workspace);
      } catch (const OutOfMemoryError&) {
        continue;  // out of memory even after emptying the cache: try a smaller workspace
      }
    }
    if (key.tf32 || key.bf16)
      IPSNET_CUDA_CHECK(cudnnSetConvolutionMathType(d.conv, static_cast<cudnnMathType_t>(ch.math_type)));
    run(ch.algo, ws.data(), ch.workspace);
    return;
  }
  IPSNET_FAIL("conv2d ", key.str(), ": out of device memory for every algorithm's workspace (",
              ctx.allocator->stats().str(), ")");
}

size_t workspace_cap() {
  const int64_t cap = backend_options().conv_workspace_limit_bytes;
  return cap > 0 ? static_cast<size_t>(cap) : 0;
}

/// g with bf16 as it will run: asked for and supported (else float32, as the
/// CPU backend does).
Conv2dGeometry as_run(const Conv2dGeometry& g, bool supported) {
  Conv2dGeometry r = g;
  r.bf16 = g.bf16 && supported;
  return r;
}

}  // namespace

void CudaBackend::conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& y,
                                 const Conv2dGeometry& geometry) {
  const Conv2dGeometry g = as_run(geometry, supports_bf16_conv());
  const int dev = common_device("conv2d_forward", {&x, &weight, &bias, &y});
  for (const Tensor* t : {&x, &weight, &bias, &y}) require_float32("conv2d_forward", *t);
  if (g.n == 0 || g.o == 0 || g.ho == 0 || g.wo == 0) return;
  if (g.c == 0) {  // empty reduction: y = bias (or 0), as on the CPU
    fill(y, 0.0);
    if (bias.defined()) binary(math::BinaryOp::Add, y, bias.view({1, g.o, 1, 1}).expand(y.shape()), y);
    return;
  }
  const CudnnConvParams p = cudnn_conv_params(g);
  DeviceGuard guard(dev);
  CudaContext& ctx = context(dev);
  const bool tf32 = backend_options().allow_tf32;
  const size_t cap = workspace_cap();
  ConvDescriptors d(p, tf32, g.bf16);
  const ConvAlgoKey key = ConvAlgoKey::make(ConvPass::Forward, dev, tf32, static_cast<int64_t>(cap), g);
  ConvOperands io(ctx, g.bf16);
  const void* xp = io.in(x, g.n * g.c * g.h * g.w);
  const void* wp = io.in(weight, g.o * g.c * g.kh * g.kw);
  void* yp = io.out(y, g.n * g.o * g.ho * g.wo);
  ConvAlgoList list = conv_algo_cache().get(key, [&] {
    int max_count = 0;
    IPSNET_CUDA_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(ctx.cudnn, &max_count));
    return choose<cudnnConvolutionFwdAlgoPerf_t>(
        key, ctx, max_count, cap,
        [&](int n, cudnnConvolutionFwdAlgoPerf_t* perf) {
          int r = 0;
          IPSNET_CUDA_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(ctx.cudnn, d.x, d.w, d.conv, d.y, n, &r, perf));
          return r;
        },
        [&](int n, cudnnConvolutionFwdAlgoPerf_t* perf, void* ws, size_t ws_bytes) {
          int r = 0;
          IPSNET_CUDA_CHECK(cudnnFindConvolutionForwardAlgorithmEx(ctx.cudnn, d.x, xp, d.w, wp, d.conv, d.y, yp, n,
                                                                   &r, perf, ws, ws_bytes));
          return r;
        });
  });
  const float one = 1.0f, zero = 0.0f;
  run_with_fallback(key, ctx, d, list, [&](int algo, void* ws, size_t ws_bytes) {
    IPSNET_CUDA_CHECK(cudnnConvolutionForward(ctx.cudnn, &one, d.x, xp, d.w, wp, d.conv,
                                              static_cast<cudnnConvolutionFwdAlgo_t>(algo), ws, ws_bytes, &zero, d.y,
                                              yp));
  });
  io.finish();
  if (bias.defined())
    IPSNET_CUDA_CHECK(cudnnAddTensor(ctx.cudnn, &one, d.bias, bias.data<float>(), &one, d.y_f32(), y.data<float>()));
}

void CudaBackend::conv2d_backward_data(const Tensor& dy, const Tensor& weight, const Tensor& dx,
                                       const Conv2dGeometry& geometry) {
  const Conv2dGeometry g = as_run(geometry, supports_bf16_conv());
  const int dev = common_device("conv2d_backward_data", {&dy, &weight, &dx});
  for (const Tensor* t : {&dy, &weight, &dx}) require_float32("conv2d_backward_data", *t);
  if (g.n == 0 || g.c == 0 || g.h == 0 || g.w == 0) return;
  if (g.o == 0 || g.ho == 0 || g.wo == 0) return fill(dx, 0.0);  // no output reads x: dx = 0
  const CudnnConvParams p = cudnn_conv_params(g);
  DeviceGuard guard(dev);
  CudaContext& ctx = context(dev);
  const bool tf32 = backend_options().allow_tf32;
  const size_t cap = workspace_cap();
  ConvDescriptors d(p, tf32, g.bf16);
  const ConvAlgoKey key = ConvAlgoKey::make(ConvPass::BackwardData, dev, tf32, static_cast<int64_t>(cap), g);
  ConvOperands io(ctx, g.bf16);
  const void* dyp = io.in(dy, g.n * g.o * g.ho * g.wo);
  const void* wp = io.in(weight, g.o * g.c * g.kh * g.kw);
  void* dxp = io.out(dx, g.n * g.c * g.h * g.w);
  ConvAlgoList list = conv_algo_cache().get(key, [&] {
    int max_count = 0;
    IPSNET_CUDA_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(ctx.cudnn, &max_count));
    return choose<cudnnConvolutionBwdDataAlgoPerf_t>(
        key, ctx, max_count, cap,
        [&](int n, cudnnConvolutionBwdDataAlgoPerf_t* perf) {
          int r = 0;
          IPSNET_CUDA_CHECK(
              cudnnGetConvolutionBackwardDataAlgorithm_v7(ctx.cudnn, d.w, d.y, d.conv, d.x, n, &r, perf));
          return r;
        },
        [&](int n, cudnnConvolutionBwdDataAlgoPerf_t* perf, void* ws, size_t ws_bytes) {
          int r = 0;
          IPSNET_CUDA_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(ctx.cudnn, d.w, wp, d.y, dyp, d.conv, d.x,
                                                                        dxp, n, &r, perf, ws, ws_bytes));
          return r;
        });
  });
  const float one = 1.0f, zero = 0.0f;
  run_with_fallback(key, ctx, d, list, [&](int algo, void* ws, size_t ws_bytes) {
    IPSNET_CUDA_CHECK(cudnnConvolutionBackwardData(ctx.cudnn, &one, d.w, wp, d.y, dyp, d.conv,
                                                   static_cast<cudnnConvolutionBwdDataAlgo_t>(algo), ws, ws_bytes,
                                                   &zero, d.x, dxp));
  });
  io.finish();
}

void CudaBackend::conv2d_backward_weight(const Tensor& x, const Tensor& dy, const Tensor& dweight,
                                         const Tensor& dbias, const Conv2dGeometry& geometry) {
  const Conv2dGeometry g = as_run(geometry, supports_bf16_conv());
  const int dev = common_device("conv2d_backward_weight", {&x, &dy, &dweight, &dbias});
  for (const Tensor* t : {&x, &dy, &dweight, &dbias}) require_float32("conv2d_backward_weight", *t);
  DeviceGuard guard(dev);
  CudaContext& ctx = context(dev);
  if (g.o == 0) return;
  if (g.n == 0 || g.ho == 0 || g.wo == 0) {
    // No output positions: the gradients are zero.
    if (dweight.defined()) fill(dweight, 0.0);
    if (dbias.defined()) fill(dbias, 0.0);
    return;
  }
  if (g.c == 0) {
    // No input channels: dweight is empty; dbias still sums dy over (N, ho, wo).
    if (dweight.defined()) fill(dweight, 0.0);
    if (dbias.defined()) {
      // cudnnConvolutionBackwardBias needs only the dy and bias descriptors.
      IPSNET_CHECK(g.n * g.o * g.ho * g.wo <= INT_MAX, "cuDNN convolution ", g.str(), ": dy of ",
                   g.n * g.o * g.ho * g.wo, " elements exceeds cuDNN's int indexing");
      const int n = static_cast<int>(g.n), o = static_cast<int>(g.o), ho = static_cast<int>(g.ho),
                wo = static_cast<int>(g.wo);
      TensorDescriptor dy_desc(n, o, ho, wo), bias_desc(1, o, 1, 1);
      const float one = 1.0f, zero = 0.0f;
      IPSNET_CUDA_CHECK(cudnnConvolutionBackwardBias(ctx.cudnn, &one, dy_desc.d, dy.data<float>(), &zero,
                                                     bias_desc.d, dbias.data<float>()));
    }
    return;
  }
  const CudnnConvParams p = cudnn_conv_params(g);
  const bool tf32 = backend_options().allow_tf32;
  const size_t cap = workspace_cap();
  ConvDescriptors d(p, tf32, g.bf16);
  const float one = 1.0f, zero = 0.0f;
  if (dweight.defined()) {
    const ConvAlgoKey key = ConvAlgoKey::make(ConvPass::BackwardFilter, dev, tf32, static_cast<int64_t>(cap), g);
    ConvOperands io(ctx, g.bf16);
    const void* xp = io.in(x, g.n * g.c * g.h * g.w);
    const void* dyp = io.in(dy, g.n * g.o * g.ho * g.wo);
    void* dwp = io.out(dweight, g.o * g.c * g.kh * g.kw);
    ConvAlgoList list = conv_algo_cache().get(key, [&] {
      int max_count = 0;
      IPSNET_CUDA_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(ctx.cudnn, &max_count));
      return choose<cudnnConvolutionBwdFilterAlgoPerf_t>(
          key, ctx, max_count, cap,
          [&](int n, cudnnConvolutionBwdFilterAlgoPerf_t* perf) {
            int r = 0;
            IPSNET_CUDA_CHECK(
                cudnnGetConvolutionBackwardFilterAlgorithm_v7(ctx.cudnn, d.x, d.y, d.conv, d.w, n, &r, perf));
            return r;
          },
          [&](int n, cudnnConvolutionBwdFilterAlgoPerf_t* perf, void* ws, size_t ws_bytes) {
            int r = 0;
            IPSNET_CUDA_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(ctx.cudnn, d.x, xp, d.y, dyp, d.conv, d.w,
                                                                            dwp, n, &r, perf, ws, ws_bytes));
            return r;
          });
    });
    run_with_fallback(key, ctx, d, list, [&](int algo, void* ws, size_t ws_bytes) {
      IPSNET_CUDA_CHECK(cudnnConvolutionBackwardFilter(ctx.cudnn, &one, d.x, xp, d.y, dyp, d.conv,
                                                       static_cast<cudnnConvolutionBwdFilterAlgo_t>(algo), ws,
                                                       ws_bytes, &zero, d.w, dwp));
    });
    io.finish();
  }
  if (dbias.defined())  // float32 from the float32 dy, in either precision
    IPSNET_CUDA_CHECK(cudnnConvolutionBackwardBias(ctx.cudnn, &one, d.y_f32(), dy.data<float>(), &zero, d.bias,
                                                   dbias.data<float>()));
}

}  // namespace cuda
}  // namespace ipsnet

#include "cuda/context.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/backend/device_select.h"

namespace ipsnet {
namespace cuda {

// ---- debug switch ------------------------------------------------------------

namespace {
std::atomic<int>& debug_flag() {
  static std::atomic<int> flag{[] {
    const char* e = std::getenv("IPSNET_CUDA_SYNC");
    return (e && std::strcmp(e, "0") != 0 && e[0] != '\0') ? 1 : 0;
  }()};
  return flag;
}
}  // namespace

bool debug_sync() { return debug_flag().load(std::memory_order_relaxed) != 0; }
void set_debug_sync(bool on) { debug_flag().store(on ? 1 : 0); }

void check_launch(const char* kernel, const char* func, const char* file, int line) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    ::ipsnet::detail::throw_error(func, file, line, "kernel launch failed: ", kernel, ": ",
                                  status_string(e));
  if (debug_sync() || backend_options().cuda_sync) {
    e = cudaDeviceSynchronize();
    if (e != cudaSuccess)
      ::ipsnet::detail::throw_error(func, file, line, "kernel failed: ", kernel,
                                    " (caught by the debug synchronisation): ", status_string(e));
  }
}

// ---- devices -------------------------------------------------------------------

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

DeviceGuard::DeviceGuard(int device) : device_(device) {
  IPSNET_CUDA_CHECK(cudaGetDevice(&prev_));
  if (prev_ != device_) IPSNET_CUDA_CHECK(cudaSetDevice(device_));
}

DeviceGuard::~DeviceGuard() {
  if (prev_ >= 0 && prev_ != device_) (void)cudaSetDevice(prev_);
}

// ---- pinned host memory ----------------------------------------------------------

PinnedBuffer::PinnedBuffer(size_t nbytes) : size_(nbytes) {
  if (nbytes) IPSNET_CUDA_CHECK(cudaHostAlloc(&data_, nbytes, cudaHostAllocDefault));
}
PinnedBuffer::~PinnedBuffer() {
  if (data_) (void)cudaFreeHost(data_);
}
PinnedBuffer::PinnedBuffer(PinnedBuffer&& o) noexcept : data_(o.data_), size_(o.size_) {
  o.data_ = nullptr;
  o.size_ = 0;
}
PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  if (this != &o) {
    if (data_) (void)cudaFreeHost(data_);
    data_ = o.data_;
    size_ = o.size_;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

// ---- system memory of a device ------------------------------------------------------

namespace {
class DeviceMemory : public SystemMemory {
 public:
  explicit DeviceMemory(int device) : device_(device) {}
  void* raw_alloc(size_t nbytes) override {
    DeviceGuard g(device_);
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, nbytes);
    if (e == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // not sticky: clear it and report OOM
      return nullptr;
    }
    IPSNET_CUDA_CHECK(e);
    return p;
  }
  void raw_free(void* ptr, size_t) override {
    DeviceGuard g(device_);
    (void)cudaFree(ptr);
  }
  void synchronize() override {
    // Cached blocks are released only when no queued kernel can touch them;
    // cudaFree's own implicit synchronisation is not something to rely on.
    DeviceGuard g(device_);
    IPSNET_CUDA_CHECK(cudaDeviceSynchronize());
  }
  std::string describe() const override {
    size_t free_b = 0, total_b = 0;
    DeviceGuard g(device_);
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
      (void)cudaGetLastError();
      return "";
    }
    const double gib = 1024.0 * 1024.0 * 1024.0;
    return str_cat("device has ", free_b / gib, " GiB free of ", total_b / gib, " GiB");
  }

 private:
  int device_;
};

struct Registry {
  std::mutex mu;
  std::mutex create_mu;  // one context creation at a time: none is made twice
  std::vector<std::unique_ptr<CudaContext>> contexts;
  std::vector<CachingAllocator*> allocators;  // never freed: tensors may outlive statics
};
Registry& registry() {
  static Registry* r = new Registry();
  return *r;
}
}  // namespace

CachingAllocator& device_allocator(int device) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  if (r.allocators.empty()) r.allocators.resize(static_cast<size_t>(std::max(device_count(), 0)), nullptr);
  IPSNET_CHECK(device >= 0 && device < static_cast<int>(r.allocators.size()), "cuda:", device,
               " does not exist (", r.allocators.size(), " CUDA devices found)");
  auto& a = r.allocators[static_cast<size_t>(device)];
  if (!a) a = new CachingAllocator(Device::cuda(device), std::make_unique<DeviceMemory>(device));
  return *a;
}

namespace {
std::unique_ptr<CudaContext> create_context(int device) {
  auto ctx = std::make_unique<CudaContext>();
  ctx->device = device;
  DeviceGuard g(device);
  cudaDeviceProp prop;
  IPSNET_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  ctx->sm_count = prop.multiProcessorCount;
  ctx->max_shared_per_block_optin = prop.sharedMemPerBlockOptin;
  IPSNET_CUDA_CHECK(cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking));
  ctx->allocator = &device_allocator(device);

  IPSNET_CUDA_CHECK(cublasCreate(&ctx->cublas));
  // cublasSetStream resets the workspace to the default pool, so the
  // workspace is set after it (cuBLAS documentation, cublasSetStream()).
  IPSNET_CUDA_CHECK(cublasSetStream(ctx->cublas, ctx->stream));
  // Recommended workspace: 32 MiB on Hopper, 4 MiB on other architectures
  // (cuBLAS documentation, cublasSetWorkspace()); 256-byte alignment is met by cudaMalloc.
  const size_t ws = prop.major >= 9 ? (size_t(32) << 20) : (size_t(4) << 20);
  ctx->cublas_workspace = ScopedDeviceBuffer(*ctx->allocator, ws);
  IPSNET_CUDA_CHECK(cublasSetWorkspace(ctx->cublas, ctx->cublas_workspace.data(), ws));
  IPSNET_CUDA_CHECK(cublasSetMathMode(ctx->cublas, CUBLAS_DEFAULT_MATH));
  ctx->cublas_tf32 = false;

  IPSNET_CUDA_CHECK(cudnnCreate(&ctx->cudnn));
  IPSNET_CUDA_CHECK(cudnnSetStream(ctx->cudnn, ctx->stream));

  for (int i = 0; i < 2; ++i) {
    ctx->staging[i] = PinnedBuffer(CudaContext::kStagingBytes);
    IPSNET_CUDA_CHECK(cudaEventCreateWithFlags(&ctx->staging_done[i], cudaEventDisableTiming));
  }
  // The index-error record: 32 bytes of device memory outside the counted
  // allocator (it lives as long as the process), and its pinned host copy.
  void* rec = nullptr;
  IPSNET_CUDA_CHECK(cudaMalloc(&rec, sizeof(IndexErrorRecord)));
  ctx->index_error_dev = static_cast<IndexErrorRecord*>(rec);
  IPSNET_CUDA_CHECK(cudaMemsetAsync(rec, 0, sizeof(IndexErrorRecord), ctx->stream));
  void* host = nullptr;
  IPSNET_CUDA_CHECK(cudaHostAlloc(&host, sizeof(IndexErrorRecord), cudaHostAllocDefault));
  ctx->index_error_host = static_cast<IndexErrorRecord*>(host);
  std::memset(host, 0, sizeof(IndexErrorRecord));
  IPSNET_CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
  return ctx;
}
}  // namespace

CudaContext* existing_context(int device) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  if (device < 0 || device >= static_cast<int>(r.contexts.size())) return nullptr;
  return r.contexts[static_cast<size_t>(device)].get();
}

CudaContext& context(int device) {
  Registry& r = registry();
  {
    std::lock_guard<std::mutex> lock(r.mu);
    if (r.contexts.empty()) r.contexts.resize(static_cast<size_t>(std::max(device_count(), 0)));
    IPSNET_CHECK(device >= 0 && device < static_cast<int>(r.contexts.size()), "cuda:", device,
                 " does not exist (", r.contexts.size(), " CUDA devices found)");
    if (r.contexts[static_cast<size_t>(device)]) return *r.contexts[static_cast<size_t>(device)];
  }
  // Created under create_mu, outside mu (device_allocator() takes mu): a
  // second thread waits here and then finds the first one's context, so no
  // handles, workspace or staging buffers are made twice.
  std::lock_guard<std::mutex> create_lock(r.create_mu);
  {
    std::lock_guard<std::mutex> lock(r.mu);
    if (r.contexts[static_cast<size_t>(device)]) return *r.contexts[static_cast<size_t>(device)];
  }
  auto ctx = create_context(device);
  std::lock_guard<std::mutex> lock(r.mu);
  auto& slot = r.contexts[static_cast<size_t>(device)];
  slot = std::move(ctx);
  return *slot;
}

const char* index_op_name(int op) {
  switch (static_cast<IndexOp>(op)) {
    case IndexOp::Gather: return "gather";
    case IndexOp::ScatterAdd: return "scatter_add";
    case IndexOp::IndexSelect: return "index_select";
    case IndexOp::IndexAdd: return "index_add";
    case IndexOp::CutPatches: return "cut_patches";
  }
  return "indexing";
}

void check_index_errors(CudaContext& ctx) {
  if (!ctx.index_error_pending.load()) return;
  std::lock_guard<std::mutex> lock(ctx.index_error_mu);
  if (!ctx.index_error_pending.exchange(false)) return;
  DeviceGuard g(ctx.device);
  IPSNET_CUDA_CHECK(cudaMemcpyAsync(ctx.index_error_host, ctx.index_error_dev, sizeof(IndexErrorRecord),
                                    cudaMemcpyDeviceToHost, ctx.stream));
  IPSNET_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  const IndexErrorRecord rec = *ctx.index_error_host;
  if (rec.state == 0) return;
  IPSNET_CUDA_CHECK(cudaMemsetAsync(ctx.index_error_dev, 0, sizeof(IndexErrorRecord), ctx.stream));
  std::memset(ctx.index_error_host, 0, sizeof(IndexErrorRecord));
  IPSNET_FAIL(index_op_name(rec.op), " on cuda:", ctx.device, ": index ", rec.value,
              " out of range for a dimension of size ", rec.size,
              debug_sync() || backend_options().cuda_sync
                  ? ""
                  : " (found by an earlier asynchronous launch, reported at this synchronisation; "
                    "IPSNET_CUDA_SYNC=1 reports it at the launch)");
}

void index_kernel_queued(CudaContext& ctx) {
  ctx.index_error_pending.store(true);
  if (debug_sync() || backend_options().cuda_sync) check_index_errors(ctx);
}

unsigned grid_for(const CudaContext& ctx, int64_t n, int threads) {
  int64_t blocks = (n + threads - 1) / threads;
  int64_t cap = static_cast<int64_t>(ctx.sm_count) * 16;
  if (blocks > cap) blocks = cap;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned>(blocks);
}

void synchronize(int device) {
  CudaContext& ctx = context(device);
  DeviceGuard g(device);
  IPSNET_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  check_index_errors(ctx);
}

void synchronize_used_devices() {
  const int n = device_count();
  for (int d = 0; d < n; ++d)
    if (existing_context(d)) synchronize(d);
}

}  // namespace cuda
}  // namespace ipsnet

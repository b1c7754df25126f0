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
    // Blocks may still be in use by queued kernels; cudaFree waits for the device.
    (void)cudaFree(ptr);
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
  void* slot = nullptr;
  IPSNET_CUDA_CHECK(cudaHostAlloc(&slot, sizeof(int64_t), cudaHostAllocMapped));
  ctx->error_slot = static_cast<int64_t*>(slot);
  void* dslot = nullptr;
  IPSNET_CUDA_CHECK(cudaHostGetDevicePointer(&dslot, slot, 0));
  ctx->error_slot_dev = static_cast<int64_t*>(dslot);
  return ctx;
}
}  // namespace

CudaContext& context(int device) {
  Registry& r = registry();
  {
    std::lock_guard<std::mutex> lock(r.mu);
    if (r.contexts.empty()) r.contexts.resize(static_cast<size_t>(std::max(device_count(), 0)));
    IPSNET_CHECK(device >= 0 && device < static_cast<int>(r.contexts.size()), "cuda:", device,
                 " does not exist (", r.contexts.size(), " CUDA devices found)");
    if (r.contexts[static_cast<size_t>(device)]) return *r.contexts[static_cast<size_t>(device)];
  }
  // Created outside the lock: device_allocator() takes it too.
  auto ctx = create_context(device);
  std::lock_guard<std::mutex> lock(r.mu);
  auto& slot = r.contexts[static_cast<size_t>(device)];
  if (!slot) slot = std::move(ctx);
  // A context lost in a creation race is leaked on purpose: destroying handles
  // here could race with the winner's first use.
  else (void)ctx.release();
  return *slot;
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
}

}  // namespace cuda
}  // namespace ipsnet

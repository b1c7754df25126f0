// NCCL between the GPUs of a data-parallel run (one process per GPU): sums of
// gradient buckets on the device's own stream, so a sum is ordered after the
// kernels that wrote the bucket and before those that read it back. The NCCL
// id travels over the world's host transport (MPI, or the file rendezvous).
// A sum that does not finish within the collective timeout aborts the NCCL
// communicator and stops the run with one line, instead of a hang.
//
// libnccl (over 200 MB) is opened at run time (dlopen), not linked: a machine
// without it still runs everything else, and a data-parallel run there says
// so and sums device gradients through host copies.
#ifdef IPSNET_HAVE_NCCL
#include <dlfcn.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <type_traits>

#include "cuda/context.h"
#include "engine/common/error.h"
#include "engine/dist/comm.h"

namespace ipsnet {
namespace cuda {
namespace {

struct NcclApi {
  decltype(&ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&ncclCommInitRank) comm_init_rank = nullptr;
  decltype(&ncclCommDestroy) comm_destroy = nullptr;
  decltype(&ncclCommAbort) comm_abort = nullptr;
  decltype(&ncclAllReduce) all_reduce = nullptr;
  decltype(&ncclCommGetAsyncError) get_async_error = nullptr;
  decltype(&ncclGetErrorString) error_string = nullptr;
  std::string missing;  // why it could not be loaded ("" when it was)
};

const NcclApi& nccl() {
  static const NcclApi api = [] {
    NcclApi a;
    void* h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!h) h = dlopen("libnccl.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* e = dlerror();
      a.missing = std::string("cannot open libnccl.so.2 (") + (e ? e : "not found") +
                  "): install NCCL or add its directory to LD_LIBRARY_PATH";
      return a;
    }
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(h, name));
      if (!fn && a.missing.empty()) a.missing = std::string("libnccl has no symbol ") + name;
    };
    sym(a.get_unique_id, "ncclGetUniqueId");
    sym(a.comm_init_rank, "ncclCommInitRank");
    sym(a.comm_destroy, "ncclCommDestroy");
    sym(a.comm_abort, "ncclCommAbort");
    sym(a.all_reduce, "ncclAllReduce");
    sym(a.get_async_error, "ncclCommGetAsyncError");
    sym(a.error_string, "ncclGetErrorString");
    return a;
  }();
  return api;
}

void check_nccl(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return;
  throw Error(std::string("NCCL ") + what + " failed: " + nccl().error_string(r));
}

class NcclWork : public dist::Work {
 public:
  NcclWork(ncclComm_t comm, cudaEvent_t ev, int rank, int size) : comm_(comm), ev_(ev), rank_(rank), size_(size) {}
  ~NcclWork() override {
    if (!done_) {
      try {
        wait();
      } catch (...) {
      }
    }
    cudaEventDestroy(ev_);
  }
  bool test() override {
    if (done_) return true;
    cudaError_t e = cudaEventQuery(ev_);
    if (e == cudaSuccess) return done_ = true;
    if (e != cudaErrorNotReady) IPSNET_CUDA_CHECK(e);
    ncclResult_t async = ncclSuccess;
    nccl().get_async_error(comm_, &async);
    check_nccl(async, "allreduce (asynchronous error)");
    return false;
  }
  void wait() override {
    const double limit = dist::collective_timeout_s();
    const auto t0 = std::chrono::steady_clock::now();
    while (!test()) {
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > limit) {
        nccl().comm_abort(comm_);
        std::fprintf(stderr,
                     "ipsnet: rank %d/%d: NCCL allreduce did not complete within %.0f s: another rank stopped or "
                     "hangs (IPSNET_COLLECTIVE_TIMEOUT_S sets the limit)\n",
                     rank_, size_, limit);
        std::fflush(stderr);
        dist::world().abort("ipsnet: stopping after the NCCL timeout", 3);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

 private:
  ncclComm_t comm_;
  cudaEvent_t ev_;
  int rank_, size_;
  bool done_ = false;
};

class NcclReducer : public dist::DeviceReducer {
 public:
  NcclReducer(dist::Comm& host, int device) : device_(device), rank_(host.rank()), size_(host.size()) {
    ncclUniqueId id;
    if (rank_ == 0) check_nccl(nccl().get_unique_id(&id), "ncclGetUniqueId");
    host.broadcast(&id, sizeof(id), 0);
    DeviceGuard g(device_);
    check_nccl(nccl().comm_init_rank(&comm_, size_, id, rank_), "ncclCommInitRank");
  }
  ~NcclReducer() override {
    if (comm_) nccl().comm_destroy(comm_);
  }
  std::unique_ptr<dist::Work> allreduce_sum_async(const Tensor& t) override {
    IPSNET_CHECK(t.device().is_cuda() && t.device().index == device_ && t.is_contiguous(),
                 "NCCL allreduce: expected a contiguous tensor on cuda:", device_);
    IPSNET_CHECK(t.dtype() == DType::Float32 || t.dtype() == DType::Float64,
                 "NCCL allreduce: expected float32 or float64");
    DeviceGuard g(device_);
    CudaContext& ctx = context(device_);
    check_nccl(nccl().all_reduce(t.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()),
                             t.dtype() == DType::Float32 ? ncclFloat32 : ncclFloat64, ncclSum, comm_, ctx.stream),
               "allreduce");
    cudaEvent_t ev;
    IPSNET_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    IPSNET_CUDA_CHECK(cudaEventRecord(ev, ctx.stream));
    return std::make_unique<NcclWork>(comm_, ev, rank_, size_);
  }

 private:
  int device_, rank_, size_;
  ncclComm_t comm_ = nullptr;
};

std::unique_ptr<dist::DeviceReducer> make_nccl(dist::Comm& host, int device) {
  IPSNET_CHECK(nccl().missing.empty(), "NCCL: ", nccl().missing);
  return std::make_unique<NcclReducer>(host, device);
}

// Registered at load time (the CUDA objects are linked whole-archive).
const bool registered = [] {
  dist::register_device_reducer_factory(make_nccl);
  return true;
}();

}  // namespace
}  // namespace cuda
}  // namespace ipsnet
#endif  // IPSNET_HAVE_NCCL

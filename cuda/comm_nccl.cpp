// NCCL between the GPUs of a data-parallel run (one process per GPU): sums of
// gradient buckets on the device's own stream, so a sum is ordered after the
// kernels that wrote the bucket and before those that read it back. The NCCL
// id travels over the world's host transport (MPI, or the file rendezvous).
// A sum that does not finish within the collective timeout aborts the NCCL
// communicator and stops the run with one line, instead of a hang.
#ifdef IPSNET_HAVE_NCCL
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "cuda/context.h"
#include "engine/common/error.h"
#include "engine/dist/comm.h"

namespace ipsnet {
namespace cuda {
namespace {

void check_nccl(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return;
  throw Error(std::string("NCCL ") + what + " failed: " + ncclGetErrorString(r));
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
    ncclCommGetAsyncError(comm_, &async);
    check_nccl(async, "allreduce (asynchronous error)");
    return false;
  }
  void wait() override {
    const double limit = dist::collective_timeout_s();
    const auto t0 = std::chrono::steady_clock::now();
    while (!test()) {
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > limit) {
        ncclCommAbort(comm_);
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
    if (rank_ == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    host.broadcast(&id, sizeof(id), 0);
    DeviceGuard g(device_);
    check_nccl(ncclCommInitRank(&comm_, size_, id, rank_), "ncclCommInitRank");
  }
  ~NcclReducer() override {
    if (comm_) ncclCommDestroy(comm_);
  }
  std::unique_ptr<dist::Work> allreduce_sum_async(const Tensor& t) override {
    IPSNET_CHECK(t.device().is_cuda() && t.device().index == device_ && t.is_contiguous(),
                 "NCCL allreduce: expected a contiguous tensor on cuda:", device_);
    IPSNET_CHECK(t.dtype() == DType::Float32 || t.dtype() == DType::Float64,
                 "NCCL allreduce: expected float32 or float64");
    DeviceGuard g(device_);
    CudaContext& ctx = context(device_);
    check_nccl(ncclAllReduce(t.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()),
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

// Communication between the processes of one data-parallel run
// (docs/distributed.md). One process per CPU socket share or per GPU; each is
// a rank of a world of size K. The world is made once, at start-up, from how
// the process was launched:
//   - by mpirun (Open MPI's OMPI_COMM_WORLD_*, or PMI_*/PMIX_* variables):
//     MPI, when ipsnet was built with it (IPSNET_MPI);
//   - with IPSNET_RENDEZVOUS=file:/shared/dir, IPSNET_RANK and
//     IPSNET_WORLD_SIZE (clusters launched without MPI): NCCL over a file
//     rendezvous, CUDA devices only (IPSNET_NCCL);
//   - otherwise a world of one, where every collective is a no-op.
// Host collectives (bytes, sums of host buffers) go through the world's host
// transport; sums of CUDA buffers go through NCCL when it is there and
// through host copies otherwise.
//
// Every collective waits at most IPSNET_COLLECTIVE_TIMEOUT_S seconds (600 by
// default): a rank that died or hangs makes the others stop with one line
// naming the operation and the ranks, never a silent hang.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor/tensor.h"

namespace ipsnet {
namespace dist {

/// A collective in flight. test() makes progress and says whether it is done;
/// wait() blocks (up to the collective timeout).
class Work {
 public:
  virtual ~Work() = default;
  virtual bool test() = 0;
  virtual void wait() = 0;
};

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// "single", "mpi", "nccl".
  virtual std::string kind() const = 0;
  /// In-place sum over all ranks of a contiguous float32 or float64 tensor
  /// (CPU or CUDA), started now. The tensor must stay alive until wait().
  /// CUDA tensors go to the device reducer (NCCL) or, without one, through a
  /// synchronous host copy; CPU tensors to the transport.
  std::unique_ptr<Work> allreduce_sum_async(const Tensor& t);
  void allreduce_sum(const Tensor& t) { allreduce_sum_async(t)->wait(); }
  /// Rank root's bytes to every rank (same length on all ranks).
  virtual void broadcast(void* data, int64_t bytes, int root) = 0;
  /// Every rank's string, in rank order, on every rank (lengths may differ).
  virtual std::vector<std::string> allgather(const std::string& mine) = 0;
  /// Sum of a double over ranks (loss totals, counts).
  double sum(double v);
  virtual void barrier() = 0;
  /// Stops every rank: prints `message` on this rank and ends the job with
  /// exit status `code` (MPI_Abort under MPI).
  [[noreturn]] virtual void abort(const std::string& message, int code) = 0;

 protected:
  /// The transport's sum of a checked, contiguous CPU tensor.
  virtual std::unique_ptr<Work> allreduce_host_async(const Tensor& t) = 0;
};

/// The world of this process (a world of one until init() found a launcher).
Comm& world();
/// Makes the world from the launcher's environment (see above). Call once,
/// first thing in main(); argc/argv are handed to MPI_Init.
void init(int* argc, char*** argv);
/// Ends the world (MPI_Finalize) at a normal exit.
void finalize();
/// True when the environment says this process was started by a launcher
/// with more than one rank (whether or not this build can talk to them).
bool launched_distributed();
/// The collective timeout in seconds (IPSNET_COLLECTIVE_TIMEOUT_S).
double collective_timeout_s();
/// "rank R/K: " in a world of more than one, else "".
std::string rank_prefix();

/// A host transport: `detect` says whether the environment asks for it.
/// init() tries MPI (when built) and then the file rendezvous.
struct Transport {
  const char* name;
  bool (*detect)();
  std::unique_ptr<Comm> (*make)(int* argc, char*** argv);
  void (*finalize)();
};
#ifdef IPSNET_HAVE_MPI
Transport mpi_transport();  // engine/dist/comm_mpi.cpp
#endif
Transport file_transport();  // engine/dist/comm_file.cpp

/// Sums CUDA buffers between ranks (NCCL), registered by the CUDA build when
/// NCCL was found; used by every host transport for device tensors.
struct DeviceReducer {
  virtual ~DeviceReducer() = default;
  virtual std::unique_ptr<Work> allreduce_sum_async(const Tensor& t) = 0;
};
/// The device reducer of this world (null: device tensors go through host
/// copies). Made on first use, collectively: every rank must ask.
DeviceReducer* device_reducer(int cuda_device);
void register_device_reducer_factory(std::unique_ptr<DeviceReducer> (*make)(Comm& host, int cuda_device));
/// A new device reducer over `host` (also a world of one: the one-GPU NCCL
/// smoke test of scripts/gpu_check.sh); null when the build has no NCCL.
std::unique_ptr<DeviceReducer> make_device_reducer(Comm& host, int cuda_device);

/// A Work that is already done.
class DoneWork : public Work {
 public:
  bool test() override { return true; }
  void wait() override {}
};

}  // namespace dist
}  // namespace ipsnet

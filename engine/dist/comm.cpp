#include "engine/dist/comm.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "engine/common/error.h"

namespace ipsnet {
namespace dist {

namespace {

class SingleComm : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string kind() const override { return "single"; }
  std::unique_ptr<Work> allreduce_host_async(const Tensor&) override { return std::make_unique<DoneWork>(); }
  void broadcast(void*, int64_t, int) override {}
  std::vector<std::string> allgather(const std::string& mine) override { return {mine}; }
  void barrier() override {}
  [[noreturn]] void abort(const std::string& message, int code) override {
    std::fprintf(stderr, "%s\n", message.c_str());
    std::fflush(stderr);
    std::_Exit(code);
  }
};

std::vector<Transport> transports() {
  std::vector<Transport> t;
#ifdef IPSNET_HAVE_MPI
  t.push_back(mpi_transport());
#endif
  t.push_back(file_transport());
  return t;
}

struct WorldState {
  std::unique_ptr<Comm> comm = std::make_unique<SingleComm>();
  Transport transport{nullptr, nullptr, nullptr, nullptr};
  std::unique_ptr<DeviceReducer> (*device_factory)(Comm&, int) = nullptr;
  std::unique_ptr<DeviceReducer> device;
  int device_index = -1;
  bool device_tried = false;
};

WorldState& state() {
  static WorldState s;
  return s;
}

bool env_set(const char* k) {
  const char* v = std::getenv(k);
  return v && *v;
}

}  // namespace

std::unique_ptr<Work> Comm::allreduce_sum_async(const Tensor& t) {
  if (size() == 1) return std::make_unique<DoneWork>();  // a world of one: nothing to sum
  IPSNET_CHECK(t.is_contiguous() && (t.dtype() == DType::Float32 || t.dtype() == DType::Float64),
               "allreduce: expected a contiguous float32 or float64 tensor");
  if (t.device().is_cuda()) {
    if (DeviceReducer* d = device_reducer(t.device().index)) return d->allreduce_sum_async(t);
    Tensor h = t.to(Device::cpu());
    allreduce_host_async(h)->wait();
    const_cast<Tensor&>(t).copy_(h);
    return std::make_unique<DoneWork>();
  }
  return allreduce_host_async(t);
}

double Comm::sum(double v) {
  Tensor t = Tensor::scalar(v, DType::Float64);
  allreduce_sum(t);
  return t.item();
}

Comm& world() { return *state().comm; }

bool launched_distributed() {
  for (const char* k : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "IPSNET_WORLD_SIZE"}) {
    const char* v = std::getenv(k);
    if (v && std::atoi(v) > 1) return true;
  }
  return false;
}

void init(int* argc, char*** argv) {
  WorldState& s = state();
  for (const Transport& t : transports()) {
    if (!t.detect()) continue;
    s.transport = t;
    s.comm = t.make(argc, argv);
    return;
  }
  if (launched_distributed()) {
    std::string how = env_set("IPSNET_RENDEZVOUS") ? "IPSNET_RENDEZVOUS" : "an MPI launcher (mpirun)";
    throw Error("this process was started by " + how +
                " with more than one rank, but this ipsnet was built without "
                "the transport for it (MPI: IPSNET_MPI, needs libopenmpi-dev; see docs/distributed.md)");
  }
}

void finalize() {
  WorldState& s = state();
  s.device.reset();
  if (s.transport.finalize) s.transport.finalize();
  s.comm = std::make_unique<SingleComm>();
  s.transport = Transport{nullptr, nullptr, nullptr, nullptr};
}

double collective_timeout_s() {
  const char* v = std::getenv("IPSNET_COLLECTIVE_TIMEOUT_S");
  if (!v || !*v) return 600.0;
  char* end = nullptr;
  double t = std::strtod(v, &end);
  IPSNET_CHECK(end && *end == 0 && t > 0 && t < 1e7, "IPSNET_COLLECTIVE_TIMEOUT_S='", v,
               "': expected a number of seconds > 0");
  return t;
}

std::string rank_prefix() {
  Comm& w = world();
  if (w.size() <= 1) return "";
  return "rank " + std::to_string(w.rank()) + "/" + std::to_string(w.size()) + ": ";
}

void register_device_reducer_factory(std::unique_ptr<DeviceReducer> (*make)(Comm&, int)) {
  state().device_factory = make;
}

std::unique_ptr<DeviceReducer> make_device_reducer(Comm& host, int cuda_device) {
  return state().device_factory ? state().device_factory(host, cuda_device) : nullptr;
}

DeviceReducer* device_reducer(int cuda_device) {
  WorldState& s = state();
  if (world().size() <= 1 || !s.device_factory) return nullptr;
  if (!s.device_tried) {
    s.device_tried = true;
    s.device_index = cuda_device;
    try {
      s.device = s.device_factory(*s.comm, cuda_device);
    } catch (const Error& e) {
      // Every rank fails alike (no library): sums go through host copies.
      if (s.comm->rank() == 0)
        std::fprintf(stderr, "ipsnet: %s; CUDA gradients are summed through host memory instead\n", e.what());
    }
  }
  IPSNET_CHECK(s.device_index == cuda_device, "data-parallel training uses one CUDA device per rank (cuda:",
               s.device_index, "), not also cuda:", cuda_device);
  return s.device.get();
}

}  // namespace dist
}  // namespace ipsnet

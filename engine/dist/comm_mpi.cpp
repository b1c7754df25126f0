// The MPI host transport (Open MPI from Debian's libopenmpi-dev): ranks
// started by mpirun. Only the thread that called init() talks to MPI
// (MPI_THREAD_FUNNELED); every collective is non-blocking and polled, so that
// a wait can end at the collective timeout with a clear line instead of
// hanging on a rank that died.
#ifdef IPSNET_HAVE_MPI
// The C API only (no deprecated C++ bindings, which need libmpi_cxx).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <chrono>
#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "engine/common/error.h"
#include "engine/dist/comm.h"

namespace ipsnet {
namespace dist {

namespace {

void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw Error(std::string("MPI ") + what + " failed: " + std::string(msg, static_cast<size_t>(len)));
}

/// Polls requests until all are complete or the collective timeout passes.
void wait_all(std::vector<MPI_Request>& reqs, const char* what) {
  const double limit = collective_timeout_s();
  const auto t0 = std::chrono::steady_clock::now();
  int spins = 0;
  for (;;) {
    int done = 0;
    check_mpi(MPI_Testall(static_cast<int>(reqs.size()), reqs.data(), &done, MPI_STATUSES_IGNORE), what);
    if (done) return;
    double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (waited > limit) {
      int r = 0, k = 1;
      MPI_Comm_rank(MPI_COMM_WORLD, &r);
      MPI_Comm_size(MPI_COMM_WORLD, &k);
      std::fprintf(stderr,
                   "ipsnet: rank %d/%d: MPI %s did not complete within %.0f s: another rank stopped or hangs "
                   "(mpirun names a rank that died; IPSNET_COLLECTIVE_TIMEOUT_S sets the limit)\n",
                   r, k, what, limit);
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 3);
      std::_Exit(3);
    }
    if (++spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

class MpiWork : public Work {
 public:
  MpiWork(std::vector<MPI_Request> reqs, const char* what) : reqs_(std::move(reqs)), what_(what) {}
  ~MpiWork() override {
    if (!done_) {
      try {
        wait();
      } catch (...) {
      }
    }
  }
  bool test() override {
    if (done_) return true;
    int flag = 0;
    check_mpi(MPI_Testall(static_cast<int>(reqs_.size()), reqs_.data(), &flag, MPI_STATUSES_IGNORE), what_);
    done_ = flag != 0;
    return done_;
  }
  void wait() override {
    if (done_) return;
    wait_all(reqs_, what_);
    done_ = true;
  }

 private:
  std::vector<MPI_Request> reqs_;
  const char* what_;
  bool done_ = false;
};

class MpiComm : public Comm {
 public:
  MpiComm() {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string kind() const override { return "mpi"; }

  std::unique_ptr<Work> allreduce_host_async(const Tensor& t) override {
    MPI_Datatype dt = t.dtype() == DType::Float32 ? MPI_FLOAT : MPI_DOUBLE;
    char* p = static_cast<char*>(t.raw_data());
    const int64_t esize = t.dtype() == DType::Float32 ? 4 : 8;
    std::vector<MPI_Request> reqs;
    for (int64_t off = 0, n = t.numel(); off < n; off += INT_MAX / 2) {
      const int64_t cnt = std::min<int64_t>(INT_MAX / 2, n - off);
      MPI_Request r;
      check_mpi(MPI_Iallreduce(MPI_IN_PLACE, p + off * esize, static_cast<int>(cnt), dt, MPI_SUM, MPI_COMM_WORLD, &r),
                "allreduce");
      reqs.push_back(r);
    }
    return std::make_unique<MpiWork>(std::move(reqs), "allreduce");
  }

  void broadcast(void* data, int64_t bytes, int root) override {
    std::vector<MPI_Request> reqs;
    char* p = static_cast<char*>(data);
    for (int64_t off = 0; off < bytes; off += INT_MAX / 2) {
      MPI_Request r;
      check_mpi(MPI_Ibcast(p + off, static_cast<int>(std::min<int64_t>(INT_MAX / 2, bytes - off)), MPI_BYTE, root,
                           MPI_COMM_WORLD, &r),
                "broadcast");
      reqs.push_back(r);
    }
    wait_all(reqs, "broadcast");
  }

  std::vector<std::string> allgather(const std::string& mine) override {
    IPSNET_CHECK(mine.size() < static_cast<size_t>(INT_MAX / 2), "allgather: ", mine.size(), " bytes is too many");
    int len = static_cast<int>(mine.size());
    std::vector<int> lens(static_cast<size_t>(size_));
    std::vector<MPI_Request> reqs(1);
    check_mpi(MPI_Iallgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, MPI_COMM_WORLD, &reqs[0]), "allgather");
    wait_all(reqs, "allgather");
    std::vector<int> displs(static_cast<size_t>(size_));
    int64_t total = 0;
    for (int r = 0; r < size_; ++r) {
      displs[static_cast<size_t>(r)] = static_cast<int>(total);
      total += lens[static_cast<size_t>(r)];
    }
    IPSNET_CHECK(total < INT_MAX, "allgather: ", total, " bytes in all is too many");
    std::string all(static_cast<size_t>(total), '\0');
    check_mpi(MPI_Iallgatherv(mine.data(), len, MPI_BYTE, all.data(), lens.data(), displs.data(), MPI_BYTE,
                              MPI_COMM_WORLD, &reqs[0]),
              "allgather");
    wait_all(reqs, "allgather");
    std::vector<std::string> out;
    for (int r = 0; r < size_; ++r)
      out.push_back(all.substr(static_cast<size_t>(displs[static_cast<size_t>(r)]),
                               static_cast<size_t>(lens[static_cast<size_t>(r)])));
    return out;
  }

  void barrier() override {
    std::vector<MPI_Request> reqs(1);
    check_mpi(MPI_Ibarrier(MPI_COMM_WORLD, &reqs[0]), "barrier");
    wait_all(reqs, "barrier");
  }

  [[noreturn]] void abort(const std::string& message, int code) override {
    std::fprintf(stderr, "%s\n", message.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

 private:
  int rank_ = 0, size_ = 1;
};

bool mpi_detect() {
  for (const char* k : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"}) {
    const char* v = std::getenv(k);
    if (v && *v) return true;
  }
  return false;
}

std::unique_ptr<Comm> mpi_make(int* argc, char*** argv) {
  int provided = 0;
  check_mpi(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "init");
  IPSNET_CHECK(provided >= MPI_THREAD_FUNNELED, "MPI: this MPI library gives thread level ", provided,
               "; ipsnet needs MPI_THREAD_FUNNELED (its worker threads never call MPI)");
  // Errors come back as codes (check_mpi turns them into one line) instead
  // of MPI's default of aborting with its own message.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  return std::make_unique<MpiComm>();
}

void mpi_finalize() {
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin) MPI_Finalize();
}

}  // namespace

Transport mpi_transport() { return Transport{"mpi", mpi_detect, mpi_make, mpi_finalize}; }

}  // namespace dist
}  // namespace ipsnet
#endif  // IPSNET_HAVE_MPI

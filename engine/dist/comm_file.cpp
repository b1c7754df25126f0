// The file rendezvous: ranks that share a filesystem and were started without
// MPI (a cluster scheduler's own launcher, `srun`, a shell loop) find each
// other through a directory: IPSNET_RENDEZVOUS=file:/shared/empty/dir,
// IPSNET_RANK (0..K-1) and IPSNET_WORLD_SIZE (K).
//
// Every collective is one numbered round: each rank writes its contribution
// to c<round>-r<rank> (temporary name + rename, so a reader never sees half a
// file), waits until all K files of the round exist, and computes the result
// from them in rank order, which gives every rank the same bytes. A rank
// removes its own file of round n-2 when it starts round n: by then every
// rank has finished reading round n-2. It is meant for the few host
// collectives of a run (start-up checks, the NCCL id, evaluation results,
// parameter checksums) and works, slowly, for CPU gradients too.
//
// A rank that does not deliver within the collective timeout is named; a rank
// that stops with an error writes `abort`, which the others read and repeat.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "engine/common/error.h"
#include "engine/dist/comm.h"

namespace ipsnet {
namespace dist {

namespace {

namespace fs = std::filesystem;

int env_int(const char* k) {
  const char* v = std::getenv(k);
  IPSNET_CHECK(v && *v, "IPSNET_RENDEZVOUS is set, so ", k, " must be set too (see docs/distributed.md)");
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  IPSNET_CHECK(end && *end == 0 && x >= 0 && x < 65536, k, "='", v, "': expected an integer in [0, 65535]");
  return static_cast<int>(x);
}

std::string read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

class FileComm : public Comm {
 public:
  FileComm(std::string dir, int rank, int size) : dir_(std::move(dir)), rank_(rank), size_(size) {
    IPSNET_CHECK(rank_ < size_, "IPSNET_RANK=", rank_, " must be < IPSNET_WORLD_SIZE=", size_);
    std::error_code ec;
    fs::create_directories(dir_, ec);
    IPSNET_CHECK(fs::is_directory(dir_), "IPSNET_RENDEZVOUS directory '", dir_, "' cannot be created");
    IPSNET_CHECK(!fs::exists(file(0, rank_)) && !fs::exists(fs::path(dir_) / "abort"), "IPSNET_RENDEZVOUS directory '",
                 dir_, "' holds files of an earlier run: give every run a new empty directory");
    // Round 0: every rank says it is there (and which host and pid it is).
    char host[256] = {0};
    gethostname(host, sizeof(host) - 1);
    exchange(std::string(host) + " pid " + std::to_string(getpid()));
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string kind() const override { return "file"; }

  std::unique_ptr<Work> allreduce_host_async(const Tensor& t) override {
    const size_t bytes = static_cast<size_t>(t.nbytes());
    std::vector<std::string> all = exchange(std::string(static_cast<const char*>(t.raw_data()), bytes));
    const bool f32 = t.dtype() == DType::Float32;
    const int64_t n = t.numel();
    std::vector<double> acc(static_cast<size_t>(n), 0.0);
    for (const std::string& s : all) {
      IPSNET_CHECK(s.size() == bytes, "file rendezvous: ranks disagree on the size of an allreduce (", s.size(),
                   " against ", bytes, " bytes)");
      for (int64_t i = 0; i < n; ++i) {
        if (f32) {
          float v;
          std::memcpy(&v, s.data() + i * 4, 4);
          acc[static_cast<size_t>(i)] += v;
        } else {
          double v;
          std::memcpy(&v, s.data() + i * 8, 8);
          acc[static_cast<size_t>(i)] += v;
        }
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      if (f32) static_cast<float*>(t.raw_data())[i] = static_cast<float>(acc[static_cast<size_t>(i)]);
      else static_cast<double*>(t.raw_data())[i] = acc[static_cast<size_t>(i)];
    }
    return std::make_unique<DoneWork>();
  }

  void broadcast(void* data, int64_t bytes, int root) override {
    std::vector<std::string> all =
        exchange(rank_ == root ? std::string(static_cast<const char*>(data), static_cast<size_t>(bytes)) : "");
    const std::string& r = all[static_cast<size_t>(root)];
    IPSNET_CHECK(static_cast<int64_t>(r.size()) == bytes, "file rendezvous: a broadcast of ", bytes,
                 " bytes got ", r.size());
    std::memcpy(data, r.data(), r.size());
  }

  std::vector<std::string> allgather(const std::string& mine) override { return exchange(mine); }
  void barrier() override { exchange(""); }

  [[noreturn]] void abort(const std::string& message, int code) override {
    std::fprintf(stderr, "%s\n", message.c_str());
    std::fflush(stderr);
    std::ofstream((fs::path(dir_) / "abort").string()) << "rank " << rank_ << ": " << message << "\n";
    std::_Exit(code);
  }

 private:
  fs::path file(int64_t round, int rank) const {
    return fs::path(dir_) / ("c" + std::to_string(round) + "-r" + std::to_string(rank));
  }

  std::vector<std::string> exchange(const std::string& mine) {
    const int64_t round = round_++;
    if (round >= 2) {
      std::error_code ec;
      fs::remove(file(round - 2, rank_), ec);
    }
    {
      fs::path tmp = file(round, rank_);
      tmp += ".tmp";
      {
        std::ofstream f(tmp, std::ios::binary);
        f.write(mine.data(), static_cast<std::streamsize>(mine.size()));
        IPSNET_CHECK(f.good(), "file rendezvous: cannot write '", tmp.string(), "'");
      }
      fs::rename(tmp, file(round, rank_));
    }
    const double limit = collective_timeout_s();
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::string> out(static_cast<size_t>(size_));
    std::vector<bool> got(static_cast<size_t>(size_), false);
    int missing = size_;
    while (missing > 0) {
      for (int r = 0; r < size_; ++r) {
        if (got[static_cast<size_t>(r)] || !fs::exists(file(round, r))) continue;
        out[static_cast<size_t>(r)] = read_all(file(round, r));
        got[static_cast<size_t>(r)] = true;
        --missing;
      }
      if (missing == 0) break;
      fs::path ab = fs::path(dir_) / "abort";
      if (fs::exists(ab)) {
        std::string m = read_all(ab);
        while (!m.empty() && m.back() == '\n') m.pop_back();
        std::fprintf(stderr, "ipsnet: rank %d/%d: stopping because %s\n", rank_, size_, m.c_str());
        std::_Exit(3);
      }
      double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (waited > limit) {
        std::string who;
        for (int r = 0; r < size_; ++r)
          if (!got[static_cast<size_t>(r)]) who += (who.empty() ? "" : ", ") + std::to_string(r);
        abort("ipsnet: rank " + std::to_string(rank_) + "/" + std::to_string(size_) + ": rank(s) " + who +
                  " did not reach collective round " + std::to_string(round) + " within " +
                  std::to_string(static_cast<int>(limit)) + " s (stopped or hung; IPSNET_COLLECTIVE_TIMEOUT_S sets the limit)",
              3);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return out;
  }

  std::string dir_;
  int rank_, size_;
  int64_t round_ = 0;
};

bool file_detect() {
  const char* v = std::getenv("IPSNET_RENDEZVOUS");
  return v && *v;
}

std::unique_ptr<Comm> file_make(int*, char***) {
  std::string v = std::getenv("IPSNET_RENDEZVOUS");
  IPSNET_CHECK(v.rfind("file:", 0) == 0 && v.size() > 5, "IPSNET_RENDEZVOUS='", v,
               "': expected file:/a/shared/directory");
  return std::make_unique<FileComm>(v.substr(5), env_int("IPSNET_RANK"), env_int("IPSNET_WORLD_SIZE"));
}

}  // namespace

Transport file_transport() { return Transport{"file", file_detect, file_make, nullptr}; }

}  // namespace dist
}  // namespace ipsnet

// Data-parallel communication (engine/dist, train/data_parallel): collectives,
// the bucketed gradient reducer and the collective timeout, each run as K real
// processes of tests/dist/worker/dist_worker.cpp, through the file rendezvous
// (always built) and under mpirun (when ipsnet was built with MPI). The
// end-to-end training comparisons are tests/dist/train_dist_test.py.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "engine/engine.h"
#include "layers/batchnorm.h"
#include "tests/testing/gradcheck.h"
#include "train/data_parallel.h"

namespace fs = std::filesystem;

namespace {

struct Launch {
  int status = -1;  // exit status of the shell (the launcher's)
  std::string output;
};

Launch shell(const std::string& cmd) {
  std::string tmpl = (fs::temp_directory_path() / "ipsnet-dist-out-XXXXXX").string();
  int fd = mkstemp(tmpl.data());
  EXPECT_GE(fd, 0);
  close(fd);
  Launch r;
  int rc = std::system(("( " + cmd + " ) > " + tmpl + " 2>&1").c_str());
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
  std::ifstream f(tmpl);
  std::stringstream ss;
  ss << f.rdbuf();
  r.output = ss.str();
  fs::remove(tmpl);
  return r;
}

std::string temp_dir() {
  std::string tmpl = (fs::temp_directory_path() / "ipsnet-rdv-XXXXXX").string();
  EXPECT_NE(mkdtemp(tmpl.data()), nullptr);
  return tmpl;
}

/// K workers through the file rendezvous, started in the background by one shell.
Launch file_ranks(int k, const std::string& scenario, const std::string& extra_env = "") {
  const std::string dir = temp_dir();
  std::string cmd = "pids=''; for r in $(seq 0 " + std::to_string(k - 1) + "); do IPSNET_RENDEZVOUS=file:" + dir +
                    "/rdv IPSNET_RANK=$r IPSNET_WORLD_SIZE=" + std::to_string(k) + " OMP_NUM_THREADS=1 " + extra_env +
                    " " + IPSNET_DIST_WORKER + " " + scenario +
                    " & pids=\"$pids $!\"; done; rc=0; for p in $pids; do wait $p || rc=$?; done; exit $rc";
  Launch r = shell(cmd);
  fs::remove_all(dir);
  return r;
}

bool have_mpirun() { return std::system("command -v mpirun > /dev/null 2>&1") == 0; }

Launch mpi_ranks(int k, const std::string& scenario, const std::string& extra_env = "") {
  return shell("env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader " + extra_env +
               " mpirun --oversubscribe -np " + std::to_string(k) + " -x OMP_NUM_THREADS=1 " +
               (extra_env.empty() ? "" : "-x IPSNET_COLLECTIVE_TIMEOUT_S ") + IPSNET_DIST_WORKER + " " + scenario);
}

#define SKIP_WITHOUT_MPI()                                                                                   \
  do {                                                                                                       \
    if (!IPSNET_DIST_HAVE_MPI) GTEST_SKIP() << "ipsnet was built without MPI (IPSNET_MPI; libopenmpi-dev)";  \
    if (!have_mpirun()) GTEST_SKIP() << "no mpirun on PATH (apt-get install openmpi-bin)";                  \
  } while (0)

}  // namespace

TEST(DataParallel, ShardsCoverTheBatchInOrder) {
  // One process: the world of one keeps the whole batch.
  ipsnet::train::DataParallel dp;
  EXPECT_FALSE(dp.active());
  std::vector<int64_t> ids{5, 3, 9};
  EXPECT_EQ(dp.shard(ids), ids);
  EXPECT_EQ(dp.sum(2.5), 2.5);
}

TEST(DataParallel, ChecksumSeesOneFlippedBit) {
  using namespace ipsnet;
  Tensor a = Tensor::from_vector(std::vector<float>{1, 2, 3}, {3});
  Tensor b = a.clone();
  EXPECT_EQ(train::tensor_checksum({a}), train::tensor_checksum({b}));
  uint32_t bits;
  std::memcpy(&bits, b.data<float>() + 1, 4);
  bits ^= 1u;
  std::memcpy(b.data<float>() + 1, &bits, 4);
  EXPECT_NE(train::tensor_checksum({a}), train::tensor_checksum({b}));
}

// Synchronised BatchNorm in one process (a world of one): the composed path
// must be the fused BatchNorm, forward, gradients and running statistics.
TEST(SyncBatchNorm, OneRankEqualsFusedBatchNorm) {
  using namespace ipsnet;
  Generator g(7);
  Tensor x0 = Tensor::randn({6, 4, 5, 3}, g, 0.5, 2.0);
  Tensor dy = Tensor::randn({6, 4, 5, 3}, g);
  train::DataParallel dp;
  for (bool relu : {false, true}) {
    BatchNorm2d fused(BatchNormOptions(4)), synced(BatchNormOptions(4));
    for (BatchNorm2d* bn : {&fused, &synced}) {
      NoGradGuard ng;
      bn->weight_.copy_(Tensor::from_vector(std::vector<float>{1.5f, -0.5f, 2.0f, 0.75f}, {4}));
      bn->bias_.copy_(Tensor::from_vector(std::vector<float>{0.1f, 0.2f, -0.3f, 0.0f}, {4}));
      bn->train();
    }
    Tensor xa = x0.clone().set_requires_grad(true), xb = x0.clone().set_requires_grad(true);
    Tensor ya = relu ? fused.forward_relu(xa, false) : fused.forward(xa);
    Tensor yb;
    {
      BatchNormSyncGuard sync(&dp);
      yb = relu ? synced.forward_relu(xb, false) : synced.forward(xb);
    }
    EXPECT_LT(ipsnet::testing::max_abs_diff(ya, yb), 2e-5);
    ops::sum(ya * dy).backward();
    ops::sum(yb * dy).backward();
    EXPECT_LT(ipsnet::testing::max_abs_diff(xa.grad(), xb.grad()), 2e-5);
    EXPECT_LT(ipsnet::testing::max_abs_diff(fused.weight_.grad(), synced.weight_.grad()), 5e-5);
    EXPECT_LT(ipsnet::testing::max_abs_diff(fused.bias_.grad(), synced.bias_.grad()), 5e-5);
    EXPECT_LT(ipsnet::testing::max_abs_diff(fused.running_mean_, synced.running_mean_), 1e-6);
    EXPECT_LT(ipsnet::testing::max_abs_diff(fused.running_var_, synced.running_var_), 1e-5);
  }
}

TEST(SyncBatchNorm, GradcheckInDouble) {
  using namespace ipsnet;
  train::DataParallel dp;
  BatchNorm2d bn(BatchNormOptions(3).dtype(DType::Float64));
  bn.train();
  auto f = [&](const std::vector<Tensor>& in) {
    BatchNormSyncGuard sync(&dp);
    bn.weight_ = in[1];
    bn.bias_ = in[2];
    return bn.forward(in[0]);
  };
  EXPECT_TRUE(ipsnet::testing::gradcheck(f, {ipsnet::testing::rand_double({4, 3, 2, 3}, 11), ipsnet::testing::rand_double({3}, 12, 0.5, 1.5),
                                     ipsnet::testing::rand_double({3}, 13)}));
}

TEST(DistFile, Collectives) {
  for (int k : {2, 3}) {
    Launch r = file_ranks(k, "collectives");
    EXPECT_EQ(r.status, 0) << r.output;
    for (int q = 0; q < k; ++q)
      EXPECT_NE(r.output.find("rank " + std::to_string(q) + "/" + std::to_string(k) + " (file): collectives ok"),
                std::string::npos)
          << r.output;
  }
}

TEST(DistFile, ReducerMatchesOneProcess) {
  Launch r = file_ranks(2, "reducer");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("reducer ok"), std::string::npos) << r.output;
}

TEST(DistFile, SilentRankIsNamedAtTheTimeout) {
  Launch r = file_ranks(2, "silent", "IPSNET_COLLECTIVE_TIMEOUT_S=2");
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("rank(s) 1 did not reach collective round"), std::string::npos) << r.output;
}

TEST(DistFile, StaleRendezvousDirectoryIsRefused) {
  const std::string dir = temp_dir();
  fs::create_directories(dir + "/rdv");
  std::ofstream(dir + "/rdv/c0-r0") << "old";
  Launch r = shell("IPSNET_RENDEZVOUS=file:" + dir + "/rdv IPSNET_RANK=0 IPSNET_WORLD_SIZE=2 " +
                std::string(IPSNET_DIST_WORKER) + " collectives");
  fs::remove_all(dir);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("holds files of an earlier run"), std::string::npos) << r.output;
}

TEST(DistMpi, Collectives) {
  SKIP_WITHOUT_MPI();
  Launch r = mpi_ranks(2, "collectives");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("rank 1/2 (mpi): collectives ok"), std::string::npos) << r.output;
}

TEST(DistMpi, ReducerMatchesOneProcess) {
  SKIP_WITHOUT_MPI();
  for (int k : {2, 3}) {
    Launch r = mpi_ranks(k, "reducer");
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("rank 0/" + std::to_string(k) + " (mpi): reducer ok"), std::string::npos) << r.output;
  }
}

TEST(DistMpi, RankThatLeavesStopsTheOthers) {
  SKIP_WITHOUT_MPI();
  Launch r = mpi_ranks(2, "silent", "IPSNET_COLLECTIVE_TIMEOUT_S=5");
  EXPECT_NE(r.status, 0) << r.output;
  // Either mpirun saw rank 1 end without MPI_Finalize, or rank 0's timeout fired.
  EXPECT_TRUE(r.output.find("did not complete within") != std::string::npos ||
              r.output.find("rank 1") != std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("the collective returned"), std::string::npos) << r.output;
}

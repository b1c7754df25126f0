// The NCCL device reducer of data-parallel training (cuda/comm_nccl.cpp) on
// one GPU: a communicator of one rank, a sum on the device's stream, the
// completion event polled as the gradient reducer polls it. Skips, naming the
// reason, without a GPU or without NCCL in the build.
#include <gtest/gtest.h>

#include "engine/backend/device_select.h"
#include "engine/dist/comm.h"
#include "engine/dist/reducer.h"
#include "engine/engine.h"

namespace ipsnet {
namespace {

TEST(CudaNccl, OneRankAllreduceAndReducer) {
  const DeviceProbe& probe = probe_devices();
  if (probe.count == 0) GTEST_SKIP() << "no CUDA device: " << probe.why_none;
  std::unique_ptr<dist::DeviceReducer> red;
  try {
    red = dist::make_device_reducer(dist::world(), 0);
  } catch (const Error& e) {
    GTEST_SKIP() << e.what();  // libnccl not on this machine
  }
  if (!red) GTEST_SKIP() << "this build has no NCCL (IPSNET_NCCL)";
  Tensor t = Tensor::from_vector(std::vector<float>{1.5f, -2.0f, 3.25f}, {3}).to(Device::cuda(0));
  std::unique_ptr<dist::Work> w = red->allreduce_sum_async(t);
  w->wait();
  EXPECT_TRUE(w->test());
  EXPECT_EQ(t.to(Device::cpu()).to_vector<float>(), (std::vector<float>{1.5f, -2.0f, 3.25f}));
  Tensor d = Tensor::full({1 << 20}, 0.5, DType::Float64).to(Device::cuda(0));
  red->allreduce_sum_async(d)->wait();
  EXPECT_EQ(d.to(Device::cpu()).to_vector<double>()[(1 << 20) - 1], 0.5);
}

}  // namespace
}  // namespace ipsnet

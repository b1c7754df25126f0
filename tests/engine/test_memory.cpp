// Allocator statistics and the random generator.
#include <gtest/gtest.h>

#include <omp.h>

#include <cstdint>

#include "engine/engine.h"

namespace ipsnet {
namespace {

TEST(Memory, TensorBytesAppearInCurrentAndPeakAndLeaveWhenFreed) {
  MemoryStats s0 = memory_stats();
  reset_peak_memory();
  {
    Tensor t = Tensor::empty({1024, 256});  // 1 MiB
    MemoryStats s1 = memory_stats();
    EXPECT_EQ(s1.allocated_bytes - s0.allocated_bytes, 1024 * 256 * 4);
    EXPECT_GE(s1.peak_allocated_bytes, s1.allocated_bytes);
    EXPECT_EQ(s1.num_allocs, s0.num_allocs + 1);
    Tensor v = t.view({256, 1024});  // views allocate nothing
    EXPECT_EQ(memory_stats().allocated_bytes, s1.allocated_bytes);
  }
  MemoryStats s2 = memory_stats();
  EXPECT_EQ(s2.allocated_bytes, s0.allocated_bytes);
  EXPECT_GE(s2.peak_allocated_bytes, s0.allocated_bytes + 1024 * 256 * 4);
  reset_peak_memory();
  EXPECT_EQ(memory_stats().peak_allocated_bytes, s2.allocated_bytes);
  EXPECT_GE(memory_stats().reserved_bytes, memory_stats().allocated_bytes);  // blocks >= 1 MiB are cached
}

// The CPU allocator's arena for blocks of 1 MiB and more: reuse, splitting,
// coalescing, accounting, empty_cache, switching off.
class CpuArena : public ::testing::Test {
 protected:
  CpuAllocator& cpu() { return static_cast<CpuAllocator&>(get_allocator(Device::cpu())); }
  void SetUp() override { saved_ = cpu().arena_enabled(); cpu().set_arena(true); }
  void TearDown() override { cpu().set_arena(saved_); }
  bool saved_ = true;
};

TEST_F(CpuArena, FreedBlockIsReusedWithoutGrowingReserved) {
  const void* first;
  {
    Tensor t = Tensor::empty({1 << 20});  // 4 MiB
    first = t.raw_data();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(first) % 64, 0u);
  }
  MemoryStats s0 = memory_stats();
  {
    Tensor t = Tensor::empty({(1 << 20) - 100});  // a little smaller: the same place
    EXPECT_EQ(t.raw_data(), first);
    MemoryStats s1 = memory_stats();
    EXPECT_EQ(s1.reserved_bytes, s0.reserved_bytes);
    EXPECT_EQ(s1.num_system_allocs, s0.num_system_allocs);
    EXPECT_EQ(s1.allocated_bytes - s0.allocated_bytes, ((1 << 20) - 100) * 4);
  }
  EXPECT_GE(memory_stats().reserved_bytes, memory_stats().allocated_bytes);
}

TEST_F(CpuArena, NeighboursCoalesceSoThreeSmallBlocksMakeRoomForOneLarge) {
  {
    Tensor warm = Tensor::empty({3 << 20});  // 12 MiB: make sure the arena holds that much
  }
  MemoryStats s0 = memory_stats();
  {
    Tensor a = Tensor::empty({1 << 20}), b = Tensor::empty({1 << 20}), c = Tensor::empty({1 << 20});
    EXPECT_EQ(static_cast<char*>(b.raw_data()) - static_cast<char*>(a.raw_data()), 4 << 20) << "split in address order";
  }
  Tensor big = Tensor::empty({3 << 20});  // fits only if a, b, c merged back
  EXPECT_EQ(memory_stats().reserved_bytes, s0.reserved_bytes);
}

TEST_F(CpuArena, EmptyCacheLowersReservedAndAllocationsStillWork) {
  {
    Tensor t = Tensor::empty({8 << 20});  // 32 MiB
    t.fill_(1.0);
  }
  MemoryStats s0 = memory_stats();
  cpu().empty_cache();
  MemoryStats s1 = memory_stats();
  EXPECT_LT(s1.reserved_bytes, s0.reserved_bytes);
  EXPECT_EQ(s1.allocated_bytes, s0.allocated_bytes);
  Tensor t = Tensor::full({2 << 20}, 3.0);
  EXPECT_EQ(t.to_vector<float>()[12345], 3.0f);
}

TEST_F(CpuArena, SwitchedOffLargeBlocksGoToTheSystem) {
  cpu().set_arena(false);
  MemoryStats s0 = memory_stats();
  { Tensor t = Tensor::empty({1 << 20}); }
  MemoryStats s1 = memory_stats();
  EXPECT_EQ(s1.reserved_bytes, s0.reserved_bytes);
  EXPECT_EQ(s1.num_system_allocs, s0.num_system_allocs + 1);
}

TEST(Memory, CpuAllocationsAre64ByteAligned) {
  for (int i = 1; i < 20; ++i) {
    Tensor t = Tensor::empty({i * 3});
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 64, 0u);
  }
}

TEST(Memory, NoGradForwardKeepsNoActivations) {
  Tensor w = Tensor::ones({256, 256}).set_requires_grad(true);
  Tensor x = Tensor::ones({512, 256});
  int64_t base = memory_stats().allocated_bytes;
  {
    NoGradGuard ng;
    Tensor y = x;
    for (int i = 0; i < 4; ++i) y = ops::relu(ops::matmul(y, w));
    // Only the live result remains: intermediates died with their last use.
    EXPECT_EQ(memory_stats().allocated_bytes - base, 512 * 256 * 4);
  }
  EXPECT_EQ(memory_stats().allocated_bytes, base);
}

TEST(Memory, StatsLineIsReadable) {
  std::string s = memory_stats().str();
  EXPECT_NE(s.find("MiB"), std::string::npos);
}

TEST(Random, SameSeedSameStream) {
  Generator a(5), b(5), c(6);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a.next_u32(), b.next_u32());
  EXPECT_NE(Generator(5).next_u32(), c.next_u32());
  Generator d(9);
  std::vector<int64_t> p = d.permutation(50);
  std::vector<int64_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 50; ++i) EXPECT_EQ(sorted[static_cast<size_t>(i)], i);
  Generator e(9);
  EXPECT_EQ(e.permutation(50), p);
}

TEST(Random, DistributionsAreSane) {
  Generator g(1);
  double s = 0, s2 = 0, u = 0;
  int bern = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    double z = g.normal();
    s += z;
    s2 += z * z;
    double v = g.uniform();
    EXPECT_GE(v, 0.0);
    EXPECT_LT(v, 1.0);
    u += v;
    bern += g.bernoulli(0.3);
  }
  EXPECT_NEAR(s / n, 0.0, 0.05);
  EXPECT_NEAR(s2 / n, 1.0, 0.05);
  EXPECT_NEAR(u / n, 0.5, 0.02);
  EXPECT_NEAR(bern / double(n), 0.3, 0.02);
  for (int i = 0; i < 1000; ++i) {
    int64_t r = g.randint(3, 7);
    EXPECT_GE(r, 3);
    EXPECT_LT(r, 7);
  }
}

TEST(Random, DropoutMaskIndependentOfThreadCount) {
  Tensor x = Tensor::ones({200000});
  int saved = num_threads();
  set_num_threads(1);
  Generator g1(11);
  std::vector<float> a = ops::dropout(x, 0.5, true, g1).to_vector<float>();
  set_num_threads(2);
  Generator g2(11);
  std::vector<float> b = ops::dropout(x, 0.5, true, g2).to_vector<float>();
  set_num_threads(saved);
  EXPECT_EQ(a, b);
}

TEST(Threads, SetAndGet) {
  int saved = num_threads();
  set_num_threads(1);
  EXPECT_EQ(num_threads(), 1);
  EXPECT_THROW(set_num_threads(0), Error);
  set_num_threads(saved);
}

}  // namespace
}  // namespace ipsnet

// CUDA backend pieces that run without a GPU: the caching allocator's
// bookkeeping (over a fake system memory), the algorithm-cache keys, cuDNN
// parameter narrowing, device selection, the kernels' fast division and the
// float-to-int64 conversion rule both devices share.
#include <gtest/gtest.h>

#include <cstdlib>
#include <limits>
#include <random>
#include <set>

#include "cuda/caching_allocator.h"
#include "cuda/cudnn/algo_cache.h"
#include "cuda/kernels/fast_div.h"
#include "engine/backend/device_select.h"
#include "engine/engine.h"
#include "engine/math/convert.h"

namespace ipsnet {
namespace {

/// malloc with a capacity, counting calls: lets the tests run out of memory.
/// `log` records the order of synchronisations ('s') and frees ('f').
class FakeMemory : public cuda::SystemMemory {
 public:
  FakeMemory(size_t capacity, size_t* used, int* frees, std::string* log)
      : capacity_(capacity), used_(used), frees_(frees), log_(log) {}
  void* raw_alloc(size_t n) override {
    if (*used_ + n > capacity_) return nullptr;
    *used_ += n;
    return std::malloc(n);
  }
  void raw_free(void* p, size_t n) override {
    *used_ -= n;
    ++*frees_;
    *log_ += 'f';
    std::free(p);
  }
  void synchronize() override { *log_ += 's'; }
  std::string describe() const override { return "fake device"; }

 private:
  size_t capacity_;
  size_t* used_;
  int* frees_;
  std::string* log_;
};

struct AllocatorFixture : ::testing::Test {
  size_t used = 0;
  int frees = 0;
  std::string log;
  std::unique_ptr<cuda::CachingAllocator> make(size_t capacity) {
    return std::make_unique<cuda::CachingAllocator>(Device::cuda(0),
                                                    std::make_unique<FakeMemory>(capacity, &used, &frees, &log));
  }
};

TEST(CachingAllocator, SizeClassesBoundWaste) {
  EXPECT_EQ(cuda::CachingAllocator::size_class(0), 512u);
  EXPECT_EQ(cuda::CachingAllocator::size_class(1), 512u);
  EXPECT_EQ(cuda::CachingAllocator::size_class(512), 512u);
  for (size_t n : {513ul, 1000ul, 4097ul, 123457ul, 10000001ul, 3ul << 30}) {
    size_t c = cuda::CachingAllocator::size_class(n);
    EXPECT_GE(c, n);
    EXPECT_LE(c, n + n / 4 + 512) << n;
    EXPECT_EQ(cuda::CachingAllocator::size_class(c), c) << "a class is its own class";
  }
}

TEST_F(AllocatorFixture, AllocatedVersusReservedAndCacheHits) {
  auto a = make(1 << 20);
  void* p = a->allocate(1000);
  MemoryStats s = a->stats();
  EXPECT_EQ(s.allocated_bytes, 1000);
  EXPECT_EQ(s.reserved_bytes, static_cast<int64_t>(cuda::CachingAllocator::size_class(1000)));
  EXPECT_EQ(s.num_system_allocs, 1);
  a->deallocate(p, 1000);
  s = a->stats();
  EXPECT_EQ(s.allocated_bytes, 0);
  EXPECT_EQ(s.reserved_bytes, static_cast<int64_t>(cuda::CachingAllocator::size_class(1000)));  // cached
  EXPECT_EQ(a->cached_blocks(), 1u);
  // Same class: served from the cache, no system call.
  void* q = a->allocate(1010);
  EXPECT_EQ(q, p);
  EXPECT_EQ(a->stats().num_system_allocs, 1);
  EXPECT_EQ(a->stats().peak_allocated_bytes, 1010);
  a->deallocate(q, 1010);
  a->empty_cache();
  EXPECT_EQ(a->stats().reserved_bytes, 0);
  EXPECT_EQ(a->cached_bytes(), 0u);
  EXPECT_EQ(used, 0u);
}

TEST_F(AllocatorFixture, ReleasingTheCacheIsNoTensorFree) {
  auto a = make(1 << 20);
  void* p = a->allocate(1000);
  void* q = a->allocate(5000);
  a->deallocate(p, 1000);
  a->deallocate(q, 5000);
  MemoryStats s = a->stats();
  EXPECT_EQ(s.num_allocs, 2);
  EXPECT_EQ(s.num_frees, 2);
  a->empty_cache();
  s = a->stats();
  EXPECT_EQ(s.num_frees, 2) << "giving cached blocks back is not a tensor free";
  EXPECT_EQ(s.reserved_bytes, 0);
  EXPECT_EQ(s.allocated_bytes, 0);
  a->empty_cache();  // nothing cached: no synchronisation, no bookkeeping
  EXPECT_EQ(a->stats().num_frees, 2);
  EXPECT_EQ(log, "sff") << "one synchronisation, before the frees";
}

TEST_F(AllocatorFixture, PeaksAndReset) {
  auto a = make(1 << 20);
  void* p = a->allocate(4096);
  void* q = a->allocate(8192);
  a->deallocate(p, 4096);
  MemoryStats s = a->stats();
  EXPECT_EQ(s.allocated_bytes, 8192);
  EXPECT_EQ(s.peak_allocated_bytes, 4096 + 8192);
  EXPECT_EQ(s.peak_reserved_bytes, 4096 + 8192);
  a->reset_peak();
  s = a->stats();
  EXPECT_EQ(s.peak_allocated_bytes, 8192);
  EXPECT_EQ(s.peak_reserved_bytes, s.reserved_bytes);
  a->deallocate(q, 8192);
}

TEST_F(AllocatorFixture, OutOfMemoryEmptiesTheCacheAndRetries) {
  auto a = make(64 * 1024);
  void* p = a->allocate(40 * 1024);
  a->deallocate(p, 40 * 1024);  // cached: 40 KiB reserved, 0 allocated
  // 40 + 30 KiB exceed the capacity: the cache must be released, then the retry succeeds.
  void* q = a->allocate(30 * 1024);
  EXPECT_NE(q, nullptr);
  EXPECT_EQ(frees, 1);
  EXPECT_EQ(log, "sf") << "the device is synchronised before cached blocks are freed";
  EXPECT_EQ(a->stats().reserved_bytes, static_cast<int64_t>(cuda::CachingAllocator::size_class(30 * 1024)));
  a->deallocate(q, 30 * 1024);
  const MemoryStats s = a->stats();
  EXPECT_EQ(s.num_allocs, 2);
  EXPECT_EQ(s.num_frees, 2);
  EXPECT_EQ(s.allocated_bytes, 0);
}

TEST_F(AllocatorFixture, OutOfMemoryThrowsWithStatistics) {
  auto a = make(64 * 1024);
  void* p = a->allocate(48 * 1024);
  try {
    a->allocate(32 * 1024);
    FAIL() << "expected an out-of-memory error";
  } catch (const cuda::OutOfMemoryError& e) {  // its own type: callers that can do with less catch only this
    const std::string m = e.what();
    EXPECT_NE(m.find("out of memory"), std::string::npos) << m;
    EXPECT_NE(m.find("cuda:0"), std::string::npos) << m;
    EXPECT_NE(m.find("allocated"), std::string::npos) << m;
    EXPECT_NE(m.find("reserved"), std::string::npos) << m;
    EXPECT_NE(m.find("fake device"), std::string::npos) << m;
  }
  // The failed request left the statistics untouched.
  EXPECT_EQ(a->stats().allocated_bytes, 48 * 1024);
  a->deallocate(p, 48 * 1024);
}

TEST(FastDiv, MatchesDivisionBelow2To31) {
  std::mt19937_64 rng(5);
  std::vector<uint32_t> divisors = {1, 2, 3, 5, 7, 25, 49, 64, 100, 625, 641, 2500, 65535, 65536, 65537,
                                    1000003, (1u << 30) - 1, 1u << 30, (1u << 31) - 1};
  for (int i = 0; i < 200; ++i) divisors.push_back(static_cast<uint32_t>(rng() % ((1u << 31) - 1)) + 1);
  for (uint32_t d : divisors) {
    const cuda::FastDiv f(d);
    std::vector<uint32_t> xs = {0, 1, d - 1, d, d + 1, 2 * d - 1, (1u << 31) - 1, (1u << 31) - 2};
    for (int i = 0; i < 2000; ++i) xs.push_back(static_cast<uint32_t>(rng() % (1u << 31)));
    for (uint32_t x : xs) {
      if (x >= (1u << 31)) continue;
      ASSERT_EQ(f.div(x), x / d) << x << " / " << d;
    }
  }
}

TEST(Convert, FloatToInt64HasOneRuleForNanAndInfinity) {
  // The rule of engine/math/convert.h, which the CPU and CUDA copies share.
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(math::convert<int64_t>(nan), 0);
  EXPECT_EQ(math::convert<int64_t>(static_cast<float>(nan)), 0);
  EXPECT_EQ(math::convert<int64_t>(inf), INT64_MAX);
  EXPECT_EQ(math::convert<int64_t>(-inf), INT64_MIN);
  EXPECT_EQ(math::convert<int64_t>(1e30f), INT64_MAX);
  EXPECT_EQ(math::convert<int64_t>(-1e30), INT64_MIN);
  EXPECT_EQ(math::convert<int64_t>(9223372036854775808.0), INT64_MAX);
  EXPECT_EQ(math::convert<int64_t>(-9223372036854775808.0), INT64_MIN);
  EXPECT_EQ(math::convert<int64_t>(-2.7), -2);
  EXPECT_EQ(math::convert<int64_t>(2.7f), 2);
  EXPECT_EQ(math::convert<float>(int64_t(3)), 3.0f);
  // The CPU backend's copy and fill use it.
  Tensor x = Tensor::from_vector<float>({static_cast<float>(nan), static_cast<float>(inf), static_cast<float>(-inf),
                                         -3.5f, 1e20f},
                                        {5});
  EXPECT_EQ(x.to(DType::Int64).to_vector<int64_t>(),
            (std::vector<int64_t>{0, INT64_MAX, INT64_MIN, -3, INT64_MAX}));
  EXPECT_EQ(Tensor::full({2}, nan, DType::Int64).to_vector<int64_t>(), (std::vector<int64_t>{0, 0}));
}

TEST(ConvAlgoKey, EveryFieldMatters) {
  Conv2dGeometry g;
  g.n = 8; g.c = 3; g.h = 32; g.w = 32; g.o = 16; g.kh = 3; g.kw = 3; g.sh = 1; g.sw = 1; g.ph = 1; g.pw = 1;
  g.ho = 32; g.wo = 32;
  const auto base = cuda::ConvAlgoKey::make(cuda::ConvPass::Forward, 0, false, 1 << 30, g);
  EXPECT_EQ(base, cuda::ConvAlgoKey::make(cuda::ConvPass::Forward, 0, false, 1 << 30, g));
  std::set<size_t> hashes{base.hash()};
  std::vector<cuda::ConvAlgoKey> variants;
  auto vary = [&](auto&& f) {
    cuda::ConvAlgoKey k = base;
    f(k);
    EXPECT_FALSE(k == base) << k.str();
    hashes.insert(k.hash());
    variants.push_back(k);
  };
  vary([](auto& k) { k.pass = cuda::ConvPass::BackwardData; });
  vary([](auto& k) { k.pass = cuda::ConvPass::BackwardFilter; });
  vary([](auto& k) { k.device = 1; });
  vary([](auto& k) { k.tf32 = true; });
  vary([](auto& k) { k.bf16 = true; });
  vary([](auto& k) { k.workspace_limit = 1 << 20; });
  vary([](auto& k) { k.n = 9; });
  vary([](auto& k) { k.c = 4; });
  vary([](auto& k) { k.h = 33; });
  vary([](auto& k) { k.w = 31; });
  vary([](auto& k) { k.o = 17; });
  vary([](auto& k) { k.kh = 5; });
  vary([](auto& k) { k.kw = 1; });
  vary([](auto& k) { k.sh = 2; });
  vary([](auto& k) { k.sw = 2; });
  vary([](auto& k) { k.ph = 0; });
  vary([](auto& k) { k.pw = 2; });
  vary([](auto& k) { k.dh = 2; });
  vary([](auto& k) { k.dw = 2; });
  EXPECT_EQ(hashes.size(), variants.size() + 1) << "hash collisions between neighbouring keys";
  EXPECT_NE(base.str().find("forward"), std::string::npos);
  // The geometry's precision reaches the key: bfloat16 and float32 choices differ.
  Conv2dGeometry gb = g;
  gb.bf16 = true;
  const auto kb = cuda::ConvAlgoKey::make(cuda::ConvPass::Forward, 0, false, 1 << 30, gb);
  EXPECT_TRUE(kb.bf16);
  EXPECT_FALSE(kb == base);
  EXPECT_NE(kb.str().find(" bf16"), std::string::npos) << kb.str();
}

TEST(ConvAlgoCache, ComputesOncePerKey) {
  cuda::ConvAlgoCache cache;
  Conv2dGeometry g;
  g.n = 1; g.c = 1; g.h = 4; g.w = 4; g.o = 1; g.kh = 3; g.kw = 3; g.ho = 2; g.wo = 2;
  const auto k1 = cuda::ConvAlgoKey::make(cuda::ConvPass::Forward, 0, false, 0, g);
  const auto k2 = cuda::ConvAlgoKey::make(cuda::ConvPass::BackwardData, 0, false, 0, g);
  int calls = 0;
  auto compute = [&] {
    ++calls;
    return cuda::ConvAlgoList{{calls, size_t(64) * calls, 0}};
  };
  EXPECT_EQ(cache.get(k1, compute)[0].algo, 1);
  EXPECT_EQ(cache.get(k1, compute)[0].algo, 1);
  EXPECT_EQ(cache.get(k2, compute)[0].algo, 2);
  EXPECT_EQ(calls, 2);
  EXPECT_TRUE(cache.contains(k1));
  EXPECT_EQ(cache.size(), 2u);
  cache.clear();
  EXPECT_FALSE(cache.contains(k1));
}

TEST(CudnnConvParams, NarrowsAndRejectsWhatCudnnCannotTake) {
  Conv2dGeometry g;
  g.n = 2; g.c = 3; g.h = 9; g.w = 7; g.o = 4; g.kh = 3; g.kw = 3; g.sh = 2; g.sw = 1; g.ph = 1; g.pw = 0;
  g.ho = 5; g.wo = 5;
  const auto p = cuda::cudnn_conv_params(g);
  EXPECT_EQ(p.n, 2); EXPECT_EQ(p.c, 3); EXPECT_EQ(p.h, 9); EXPECT_EQ(p.w, 7); EXPECT_EQ(p.o, 4);
  EXPECT_EQ(p.sh, 2); EXPECT_EQ(p.ph, 1); EXPECT_EQ(p.pw, 0); EXPECT_EQ(p.ho, 5); EXPECT_EQ(p.wo, 5);
  Conv2dGeometry big = g;
  big.n = int64_t(1) << 32;
  try {
    cuda::cudnn_conv_params(big);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("N = 4294967296"), std::string::npos) << e.what();
  }
  Conv2dGeometry huge = g;
  huge.n = 100000; huge.c = 64; huge.h = 512; huge.w = 512;
  EXPECT_THROW(cuda::cudnn_conv_params(huge), Error);
  Conv2dGeometry neg = g;
  neg.ph = -1;
  EXPECT_THROW(cuda::cudnn_conv_params(neg), Error);
}

TEST(DeviceSelect, CpuAndAuto) {
  EXPECT_EQ(resolve_device("cpu"), Device::cpu());
  EXPECT_EQ(resolve_device("CPU"), Device::cpu());
  const DeviceProbe& p = probe_devices();
  EXPECT_TRUE(p.built) << "test_cuda links the CUDA backend, whose probe must be registered";
  EXPECT_EQ(resolve_device("auto"), p.count > 0 ? Device::cuda(0) : Device::cpu());
  EXPECT_EQ(resolve_device(""), resolve_device("auto"));
  EXPECT_THROW(resolve_device("gpu"), Error);
  EXPECT_THROW(resolve_device("cuda:x"), Error);
}

TEST(DeviceSelect, CudaWithoutDeviceIsAClearError) {
  const DeviceProbe& p = probe_devices();
  if (p.count > 0) {
    EXPECT_EQ(resolve_device("cuda"), Device::cuda(0));
    EXPECT_THROW(resolve_device(str_cat("cuda:", p.count)), Error);
    return;
  }
  EXPECT_FALSE(p.why_none.empty());
  try {
    resolve_device("cuda:0");
    FAIL();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("no usable CUDA device"), std::string::npos) << m;
    EXPECT_NE(m.find(p.why_none), std::string::npos) << m;
  }
  // Without a device nothing CUDA is registered: tensors on cuda fail clearly.
  EXPECT_THROW(Tensor::zeros({2}, DType::Float32, Device::cuda(0)), Error);
}

TEST(CutPatches, CpuMatchesTheGrid) {
  // image (1, 2, 4, 5), patches 2x3 with stride (2, 1): grid 2 x 3.
  std::vector<float> v(40);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);
  Tensor img = Tensor::from_vector<float>(v, {1, 2, 4, 5});
  Tensor idx = Tensor::from_vector<int64_t>({5, 0}, {1, 2});
  Tensor out = Tensor::empty({1, 2, 2, 2, 3});
  backend_for(Device::cpu()).cut_patches(img, idx, out, 2, 3, 2, 1);
  std::vector<float> o = out.to_vector<float>();
  // patch 5: row 1 (top 2), col 2 (left 2); channel 0 element (0, 0) = 2 * 5 + 2.
  EXPECT_EQ(o[0], 12.0f);
  EXPECT_EQ(o[5], 3 * 5 + 4.0f);          // channel 0, (1, 2)
  EXPECT_EQ(o[6], 20 + 12.0f);            // channel 1, (0, 0)
  EXPECT_EQ(o[12], 0.0f);                 // patch 0, channel 0, (0, 0)
  Tensor bad = Tensor::from_vector<int64_t>({6, 0}, {1, 2});
  EXPECT_THROW(backend_for(Device::cpu()).cut_patches(img, bad, out, 2, 3, 2, 1), Error);
}

}  // namespace
}  // namespace ipsnet

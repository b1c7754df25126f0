// ordered_parallel_map: index order, bounded reorder buffer, one worker
// state per thread, errors from either side rethrown without a hang.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/common/ordered_parallel.h"

namespace ipsnet {
namespace {

TEST(OrderedParallel, ConsumesInIndexOrderWithABoundedBuffer) {
  for (int threads : {1, 3, 8}) {
    const int64_t n = 500, window = 4;
    std::atomic<int> states{0};
    std::atomic<int64_t> pending{0}, max_pending{0};  // started, not yet consumed
    std::vector<int64_t> seen;
    auto make_work = [&] {
      ++states;
      return [&](int64_t i) {
        int64_t p = ++pending;
        int64_t m = max_pending.load();
        while (p > m && !max_pending.compare_exchange_weak(m, p)) {
        }
        return std::to_string(i * i);
      };
    };
    ordered_parallel_map(n, threads, window, make_work, [&](int64_t i, std::string&& v) {
      EXPECT_EQ(v, std::to_string(i * i));
      seen.push_back(i);
      --pending;
    });
    ASSERT_EQ(static_cast<int64_t>(seen.size()), n) << threads << " threads";
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[i], i);
    EXPECT_EQ(states.load(), threads);
    EXPECT_LE(max_pending.load(), window) << threads << " threads";
  }
}

TEST(OrderedParallel, NothingToDo) {
  int calls = 0;
  ordered_parallel_map(0, 4, 4, [] { return [](int64_t i) { return i; }; }, [&](int64_t, int64_t) { ++calls; });
  EXPECT_EQ(calls, 0);
}

TEST(OrderedParallel, AWorkerErrorIsRethrownAndStopsTheRest) {
  std::vector<int64_t> seen;
  try {
    ordered_parallel_map(
        1000, 4, 8,
        [] {
          return [](int64_t i) {
            if (i == 37) throw std::runtime_error("item 37 failed");
            return i;
          };
        },
        [&](int64_t i, int64_t) { seen.push_back(i); });
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "item 37 failed");
  }
  EXPECT_LE(seen.size(), 37u);
  for (size_t k = 0; k < seen.size(); ++k) EXPECT_EQ(seen[k], static_cast<int64_t>(k));
}

TEST(OrderedParallel, AConsumerErrorOrAWorkerSetupErrorIsRethrown) {
  EXPECT_THROW(ordered_parallel_map(
                   1000, 4, 8, [] { return [](int64_t i) { return i; }; },
                   [](int64_t i, int64_t) {
                     if (i == 5) throw std::runtime_error("disk full");
                   }),
               std::runtime_error);
  std::atomic<int> made{0};
  EXPECT_THROW(ordered_parallel_map(
                   100, 3, 4,
                   [&] {
                     if (++made == 2) throw std::runtime_error("no memory for scratch");
                     return [](int64_t i) { return i; };
                   },
                   [](int64_t, int64_t) {}),
               std::runtime_error);
}

}  // namespace
}  // namespace ipsnet

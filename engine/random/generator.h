// A seeded generator over the Philox counter stream.
// State = (seed, offset): each request consumes `n` counters starting at
// `offset`, so results depend only on the seed and the order of requests,
// never on thread count. Device kernels receive (seed, offset) and draw the
// same numbers (engine/math/philox.h).
#pragma once
#include <cstdint>
#include <vector>

#include "engine/math/philox.h"

namespace ipsnet {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0, uint64_t stream = 0) : seed_(seed), stream_(stream) {}

  uint64_t seed() const { return seed_; }
  uint64_t stream() const { return stream_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset, uint64_t stream = 0) {
    seed_ = seed;
    offset_ = offset;
    stream_ = stream;
  }
  /// Reserves n counters and returns the first; a kernel draws philox_u32(seed, stream, first + i).
  uint64_t reserve(uint64_t n) {
    uint64_t first = offset_;
    offset_ += n;
    return first;
  }

  uint32_t next_u32() { return math::philox_u32(seed_, stream_, offset_++); }
  /// Uniform in [0, 1), 53 bits.
  double uniform() {
    uint32_t hi = next_u32();
    uint32_t lo = next_u32();
    return math::u64_to_unit_double(hi, lo);
  }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  /// Uniform integer in [0, n), unbiased (rejection).
  uint64_t randint(uint64_t n);
  /// Uniform integer in [lo, hi).
  int64_t randint(int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(randint(static_cast<uint64_t>(hi - lo)));
  }
  /// Standard normal (Box-Muller, one value per two uniforms).
  double normal();
  double normal(double mean, double std) { return mean + std * normal(); }
  bool bernoulli(double p) { return uniform() < p; }
  /// A uniformly random permutation of 0..n-1 (Fisher-Yates).
  std::vector<int64_t> permutation(int64_t n);

 private:
  uint64_t seed_;
  uint64_t stream_;
  uint64_t offset_ = 0;
};

}  // namespace ipsnet

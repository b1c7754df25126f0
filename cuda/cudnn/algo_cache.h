// Convolution algorithm cache: cuDNN's choice is made once per shape and
// reused. The key and the parameter narrowing include no CUDA header, so they
// are tested on machines without a GPU (tests/cuda).
#pragma once
#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/backend/geometry.h"
#include "engine/common/error.h"

namespace ipsnet {
namespace cuda {

enum class ConvPass : int { Forward = 0, BackwardData = 1, BackwardFilter = 2 };
const char* conv_pass_name(ConvPass p);

/// Everything that changes cuDNN's algorithm choice for one convolution.
struct ConvAlgoKey {
  ConvPass pass = ConvPass::Forward;
  int device = 0;
  bool tf32 = false;
  bool bf16 = false;  ///< bfloat16 operands (Conv2dGeometry::bf16 as run)
  int64_t workspace_limit = 0;
  int64_t n = 0, c = 0, h = 0, w = 0, o = 0, kh = 0, kw = 0;
  int64_t sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1;

  static ConvAlgoKey make(ConvPass pass, int device, bool tf32, int64_t workspace_limit,
                          const Conv2dGeometry& g);
  bool operator==(const ConvAlgoKey& o) const;
  size_t hash() const;
  std::string str() const;
};

struct ConvAlgoKeyHash {
  size_t operator()(const ConvAlgoKey& k) const { return k.hash(); }
};

/// One usable algorithm: cuDNN's enum value, its workspace and math type.
struct ConvAlgoChoice {
  int algo = 0;
  size_t workspace = 0;
  int math_type = 0;
};

/// Candidates in preference order (fastest first); execution walks down the
/// list when a workspace cannot be had.
using ConvAlgoList = std::vector<ConvAlgoChoice>;

class ConvAlgoCache {
 public:
  /// The cached list for key, or compute() once (under no lock) and store it.
  ConvAlgoList get(const ConvAlgoKey& key, const std::function<ConvAlgoList()>& compute);
  bool contains(const ConvAlgoKey& key) const;
  size_t size() const;
  void clear();

 private:
  mutable std::mutex mu_;
  std::unordered_map<ConvAlgoKey, ConvAlgoList, ConvAlgoKeyHash> map_;
};

ConvAlgoCache& conv_algo_cache();

/// cuDNN's int parameters of a convolution, checked before narrowing.
struct CudnnConvParams {
  int n, c, h, w;      // x (N, C, H, W)
  int o, kh, kw;       // weight (O, C, kh, kw)
  int ho, wo;          // y (N, O, ho, wo)
  int ph, pw, sh, sw, dh, dw;
};
/// Throws naming the field when a size does not fit cuDNN's int or is not positive.
CudnnConvParams cudnn_conv_params(const Conv2dGeometry& g);

}  // namespace cuda
}  // namespace ipsnet

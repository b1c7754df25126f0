#include "cuda/cudnn/algo_cache.h"

namespace ipsnet {
namespace cuda {

const char* conv_pass_name(ConvPass p) {
  switch (p) {
    case ConvPass::Forward: return "forward";
    case ConvPass::BackwardData: return "backward data";
    case ConvPass::BackwardFilter: return "backward filter";
  }
  return "?";
}

ConvAlgoKey ConvAlgoKey::make(ConvPass pass, int device, bool tf32, int64_t workspace_limit,
                              const Conv2dGeometry& g) {
  ConvAlgoKey k;
  k.pass = pass;
  k.device = device;
  k.tf32 = tf32;
  k.bf16 = g.bf16;
  k.workspace_limit = workspace_limit;
  k.n = g.n; k.c = g.c; k.h = g.h; k.w = g.w; k.o = g.o; k.kh = g.kh; k.kw = g.kw;
  k.sh = g.sh; k.sw = g.sw; k.ph = g.ph; k.pw = g.pw; k.dh = g.dh; k.dw = g.dw;
  return k;
}

bool ConvAlgoKey::operator==(const ConvAlgoKey& k) const {
  return pass == k.pass && device == k.device && tf32 == k.tf32 && bf16 == k.bf16 &&
         workspace_limit == k.workspace_limit &&
         n == k.n && c == k.c && h == k.h && w == k.w && o == k.o && kh == k.kh && kw == k.kw && sh == k.sh &&
         sw == k.sw && ph == k.ph && pw == k.pw && dh == k.dh && dw == k.dw;
}

size_t ConvAlgoKey::hash() const {
  // FNV-1a over the fields.
  uint64_t hsh = 1469598103934665603ull;
  auto mix = [&](int64_t v) {
    for (int i = 0; i < 8; ++i) {
      hsh ^= static_cast<uint64_t>(v >> (8 * i)) & 0xffu;
      hsh *= 1099511628211ull;
    }
  };
  mix(static_cast<int64_t>(pass)); mix(device); mix(tf32 ? 1 : 0); mix(bf16 ? 1 : 0); mix(workspace_limit);
  for (int64_t v : {n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw}) mix(v);
  return static_cast<size_t>(hsh);
}

std::string ConvAlgoKey::str() const {
  return str_cat(conv_pass_name(pass), " cuda:", device, " x (", n, ", ", c, ", ", h, ", ", w, ") w (", o, ", ",
                 c, ", ", kh, ", ", kw, ") s (", sh, ", ", sw, ") p (", ph, ", ", pw, ") d (", dh, ", ", dw, ")",
                 tf32 ? " tf32" : "", bf16 ? " bf16" : "", " ws<=", workspace_limit);
}

ConvAlgoList ConvAlgoCache::get(const ConvAlgoKey& key, const std::function<ConvAlgoList()>& compute) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it != map_.end()) return it->second;
  }
  ConvAlgoList list = compute();
  std::lock_guard<std::mutex> lock(mu_);
  return map_.emplace(key, std::move(list)).first->second;
}

bool ConvAlgoCache::contains(const ConvAlgoKey& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  return map_.count(key) != 0;
}

size_t ConvAlgoCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return map_.size();
}

void ConvAlgoCache::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  map_.clear();
}

ConvAlgoCache& conv_algo_cache() {
  static ConvAlgoCache* c = new ConvAlgoCache();
  return *c;
}

namespace {
int narrow(int64_t v, const char* what, const Conv2dGeometry& g, bool positive) {
  IPSNET_CHECK(v <= INT_MAX && (positive ? v > 0 : v >= 0), "cuDNN convolution ", g.str(), ": ", what, " = ", v,
               positive ? " must be in [1, INT_MAX]" : " must be in [0, INT_MAX]");
  return static_cast<int>(v);
}
}  // namespace

CudnnConvParams cudnn_conv_params(const Conv2dGeometry& g) {
  CudnnConvParams p;
  p.n = narrow(g.n, "N", g, true);
  p.c = narrow(g.c, "C", g, true);
  p.h = narrow(g.h, "H", g, true);
  p.w = narrow(g.w, "W", g, true);
  p.o = narrow(g.o, "O", g, true);
  p.kh = narrow(g.kh, "kh", g, true);
  p.kw = narrow(g.kw, "kw", g, true);
  p.ho = narrow(g.ho, "ho", g, true);
  p.wo = narrow(g.wo, "wo", g, true);
  p.ph = narrow(g.ph, "ph", g, false);
  p.pw = narrow(g.pw, "pw", g, false);
  p.sh = narrow(g.sh, "sh", g, true);
  p.sw = narrow(g.sw, "sw", g, true);
  p.dh = narrow(g.dh, "dh", g, true);
  p.dw = narrow(g.dw, "dw", g, true);
  // cuDNN's 4-d descriptors index with int: the largest tensor must fit too.
  const int64_t biggest = std::max({g.n * g.c * g.h * g.w, g.n * g.o * g.ho * g.wo, g.o * g.c * g.kh * g.kw});
  IPSNET_CHECK(biggest <= INT_MAX, "cuDNN convolution ", g.str(), ": a tensor of ", biggest,
               " elements exceeds cuDNN's int indexing (split the batch)");
  return p;
}

}  // namespace cuda
}  // namespace ipsnet

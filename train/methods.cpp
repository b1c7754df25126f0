// The registered methods. A new method: its own file under train/methods/
// defining `std::unique_ptr<Method> make_<name>_method(const MethodContext&)`,
// and one line in IPSNET_METHODS below.
#include "train/method.h"

#define IPSNET_METHODS(X)                                                                            \
  X(ips, "Iterative Patch Selection: score all patches without gradients, train on the top M")     \
  X(first_m, "baseline: the first M patches of the grid, no selection")                            \
  X(random_m, "baseline: M patches drawn at random per image and step, no selection")              \
  X(cnn, "baseline: a ResNet over the whole image (downscaled by cnn_scale), memory grows with the image")   \
  X(ats, "attention sampling: n_patches drawn from an attention on a low-resolution view, expectation estimated")

namespace ipsnet {
namespace train {

#define IPSNET_DECLARE_METHOD(name, what) std::unique_ptr<Method> make_##name##_method(const MethodContext& ctx);
IPSNET_METHODS(IPSNET_DECLARE_METHOD)
#undef IPSNET_DECLARE_METHOD

const std::vector<MethodKind>& method_kinds() {
#define IPSNET_METHOD_ROW(name, what) {#name, what, &make_##name##_method},
  static const std::vector<MethodKind> kKinds = {IPSNET_METHODS(IPSNET_METHOD_ROW)};
#undef IPSNET_METHOD_ROW
  return kKinds;
}

std::unique_ptr<Method> make_method(const MethodContext& ctx) {
  std::string known;
  for (const MethodKind& k : method_kinds()) {
    if (ctx.cfg.method == k.name) return k.make(ctx);
    known += str_cat(known.empty() ? "" : ", ", k.name);
  }
  IPSNET_FAIL("config key 'method': unknown method '", ctx.cfg.method, "' (known: ", known, ")");
}

Attention Method::attend(Batch&, bool, Generator&) {
  IPSNET_FAIL("method '", name(), "' cannot show where it looks");
}

Tensor Method::explain(Batch&, const std::string& kind, const std::string&, const std::vector<int64_t>&, Generator&) {
  IPSNET_FAIL("method '", name(), "' has no explanation map '", kind, "'");
}

}  // namespace train
}  // namespace ipsnet

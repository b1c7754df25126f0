// The registered methods. A new method: its own file under train/methods/
// defining `std::unique_ptr<Method> make_<name>_method(const MethodContext&)`,
// and one line in IPSNET_METHODS below.
#include "train/method.h"

#include "layers/mode_guard.h"
#include "train/explain.h"

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

// The default: "attention" (when explanations() lists it) is attend()'s score
// of every instance spread over the pixels of its patches (train/explain.h);
// the methods with gradient maps override explain().
Tensor Method::explain(Batch& batch, const std::string& kind, const std::string&, const std::vector<int64_t>& classes,
                       Generator& gen) {
  check_explanation_kind(name(), explanations(), kind);
  IPSNET_CHECK(kind == "attention", "method '", name(), "' lists explanation map '", kind,
               "' but does not make it");
  IPSNET_CHECK(static_cast<int64_t>(classes.size()) == batch.size(), "explain: ", classes.size(),
               " classes given for ", batch.size(), " images");
  const data::DataSource& src = batch.source();
  const PatchGrid grid = src.grid(batch.ids()[0]);
  for (int64_t id : batch.ids()) {
    const PatchGrid g = src.grid(id);
    IPSNET_CHECK(g.height == grid.height && g.width == grid.width, "explain: image ", id, " is ", g.height, "x",
                 g.width, ", the batch's first ", grid.height, "x", grid.width, " (one map size per batch)");
  }
  NoGradGuard ng;
  TrainModeGuard eval_mode(model(), false);
  Attention a = attend(batch, /*all_scores=*/true, gen);
  IPSNET_CHECK(a.all_scores.defined() && a.all_scores.dim() == 2 && a.all_scores.size(0) == batch.size(),
               "method '", name(), "': attend gave no score for every instance of the ", batch.size(),
               " images (a batch of several parts?)");
  return spread_scores(a.all_scores, grid);
}

}  // namespace train
}  // namespace ipsnet

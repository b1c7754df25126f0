// Iterative Patch Selection as a method (SPEC sections 1-3): the no-gradient
// selection of M patches per image, then the training pass on them. The
// baselines in train/methods/baselines.cpp reuse its network and pass and
// replace only the selection.
#pragma once
#include "models/ips_net.h"
#include "models/ips_selection.h"
#include "train/method.h"

namespace ipsnet {
namespace train {

/// The IPS network a config describes (encoder, aggregator, heads, the
/// dissertation's losses, pretrained and frozen encoders, recomputation),
/// on the context's device with its positional encodings computed.
std::shared_ptr<IPSNet> build_ips_net(const MethodContext& ctx);

class IPSMethod : public Method {
 public:
  explicit IPSMethod(const MethodContext& ctx);
  std::string name() const override { return "ips"; }
  Module& model() override { return *net_; }
  IPSNet& net() { return *net_; }
  void select(Batch& batch, bool training, Generator& gen) override;
  /// The pass on the patches select() left in the batch.
  MethodOutput forward(Batch& batch, const std::map<std::string, Tensor>& targets) override;
  Attention attend(Batch& batch, bool all_scores, Generator& gen) override;
  /// The patch scores of the selection's full pass spread over their pixels
  /// (Method::explain's default).
  std::vector<std::string> explanations() const override { return {"attention"}; }
  /// The selection options of the config (STKIM only in training unless mask_eval).
  IPSOptions options(bool training) const;

 protected:
  Config cfg_;
  std::shared_ptr<IPSNet> net_;
};

}  // namespace train
}  // namespace ipsnet

// A method: how a model turns a batch of a data source into predictions
// (docs/architecture.md). It owns its model and its per-batch work in two
// steps, as IPS needs them and the other methods fit them:
//   select   the no-gradient step ahead of the training pass (IPS's patch
//            selection; nothing for methods that sample inside their forward)
//   forward  the pass with gradients in training: logits per task, and the
//            loss with the method's extra terms
// and it can show where it looked (attention maps). It knows nothing of
// files: the trainer opens the data and runs the loop.
//
// Methods are registered in train/methods.cpp, one line each.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/source.h"
#include "layers/module.h"
#include "train/batch.h"
#include "train/config.h"

namespace ipsnet {
namespace train {

/// What a method predicts for a batch.
struct MethodOutput {
  std::map<std::string, Tensor> logits;  // task -> (B, n_class)
  Tensor loss;                           // total loss (defined when targets were given)
  std::map<std::string, double> losses;  // each task's loss by name, extra terms as "_name"
  Tensor selected;                       // (B, k) int64 instances the prediction used, CPU (undefined: whole image)
};

/// Where a method looked in the images of a batch (attention maps).
struct Attention {
  Tensor idx;              // (B, k) int64 instances it chose, CPU
  Tensor scores;           // (B, k) their scores (undefined when it does not score)
  Tensor all_scores;       // (B, N) every instance's score (when asked for and it can)
  int64_t n_encoded = 0;   // instances it ran through its encoder
};

/// What a method is built from.
struct MethodContext {
  const Config& cfg;
  const data::DataSource& data;  // the training split (shapes, channels, N)
  Device device;
  Generator& init_gen;           // initial values
  Generator* dropout_gen;        // dropout masks (reseeded per step by the trainer)
};

class Method {
 public:
  virtual ~Method() = default;
  /// The registered name.
  virtual std::string name() const = 0;
  /// The trained network: parameters, buffers, state dict, train/eval mode.
  virtual Module& model() = 0;
  /// The no-gradient step before the pass (the trainer calls it before it
  /// zeroes the gradients and switches to train mode). Results go into the
  /// batch. training: the training configuration (masking etc.).
  virtual void select(Batch& batch, bool training, Generator& gen) {}
  /// The pass: with gradients and in train mode when the trainer trains,
  /// under no-grad in eval mode when it evaluates. targets empty: no loss.
  virtual MethodOutput forward(Batch& batch, const std::map<std::string, Tensor>& targets) = 0;
  /// Where it looks in the images of `batch` (eval mode, no gradients): its
  /// choice and, with all_scores, a score for every instance. Throws when it
  /// cannot.
  virtual Attention attend(Batch& batch, bool all_scores, Generator& gen);

  // ---- explanation maps (Proxy Attention, docs/proxy_attention.md) --------
  /// The kinds of explanation map this method makes, its default first:
  /// "gradcam_pp", "gradcam", "cam" (the full-image CNN), "attention" (the
  /// method's own attention spread over the pixels of each patch: IPS, ATS).
  /// Empty: none.
  virtual std::vector<std::string> explanations() const { return {}; }
  /// Where the prediction of class classes[b] of task `task` comes from in
  /// image b of `batch`: (B, H, W) float32 on the CPU, at the full size of the
  /// stored images (grid(i).height x width), in [0, 1] per image: min-max
  /// normalised (an all-equal map is all 0; a CNN map is normalised on its
  /// feature grid and then enlarged, so its extremes come close to 0 and 1,
  /// as pytorch-grad-cam's). Runs in eval mode; takes gradients
  /// internally where the kind needs them (Grad-CAM) and leaves the
  /// parameters' gradients as they were. Throws one line for a kind not in
  /// explanations().
  virtual Tensor explain(Batch& batch, const std::string& kind, const std::string& task,
                         const std::vector<int64_t>& classes, Generator& gen);
};

/// A registered method.
struct MethodKind {
  const char* name;
  const char* what;
  std::unique_ptr<Method> (*make)(const MethodContext& ctx);
};

/// Every registered method (train/methods.cpp).
const std::vector<MethodKind>& method_kinds();
/// Builds the method cfg.method names; one line naming the known ones when unknown.
std::unique_ptr<Method> make_method(const MethodContext& ctx);

}  // namespace train
}  // namespace ipsnet

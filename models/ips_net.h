// IPSNet: the network half of Iterative Patch Selection (SPEC section 2).
//
// Children and parameter names (identical to the PyTorch reference):
//   encoder.*         torchvision ResNet names (`encoder.conv1.weight`, ...) or,
//                     for pre-extracted features, the projector Sequential
//                     (`encoder.1.weight`, `encoder.2.running_mean`, ...)
//   encoder_proj.*    only when the ResNet's width C_out != D: a trainable
//                     Linear(C_out, D) (`encoder_proj.weight`, `encoder_proj.bias`);
//                     an ipsnet addition for the frozen-pretrained-backbone
//                     strategy, named outside `encoder.` so that torchvision
//                     checkpoints still load into the encoder unchanged
//   transf.*          the cross-attention aggregator (models/aggregator.h)
//   output_layers.<task>.0.{weight,bias}   per-task Linear(D, n_class)
//   transf.fb.weight  only with the semantic/diversity losses: the
//                     dissertation's shared Linear(D_v, D, no bias)
// The selection loop itself lives in models/ips_selection.h; this class is
// the network and its whole forward on given patches: encoding, positional
// encodings, aggregation, heads, and the loss with its extra terms.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/aggregator.h"
#include "models/resnet.h"

namespace ipsnet {

enum class TaskActivation { Softmax, Sigmoid };

/// One prediction task: its token's head is Linear(D, n_class).
struct TaskSpec {
  std::string name;
  int64_t n_class = 2;
  /// Softmax: single-label, target int64 class indices (B).
  /// Sigmoid: multi-label, target float multi-hot (B, n_class).
  TaskActivation act = TaskActivation::Softmax;
};

struct IPSNetOptions {
  /// "resnet18", "resnet34", "resnet50" or "features" (pre-extracted features).
  IPSNET_ARG(std::string, encoder) = "resnet18";
  /// Image channels (ResNet encoders).
  IPSNET_ARG(int64_t, in_channels) = 1;
  /// 2 or 4 ResNet stages.
  IPSNET_ARG(int, n_res_blocks) = 2;
  /// Feature width F ("features" encoder).
  IPSNET_ARG(int64_t, n_features) = 2048;
  /// Aggregator sizes; its D is the embedding width. n_token must equal the number of tasks.
  IPSNET_ARG(AggregatorOptions, transformer) = AggregatorOptions().n_token(4).D(128).D_k(16).D_v(16).D_inner(512);
  IPSNET_ARG(std::vector<TaskSpec>, tasks);
  IPSNET_ARG(DType, dtype) = DType::Float32;
  /// Fixed sinusoidal positional encodings of the patch index are added to
  /// the embeddings for scoring and aggregation (SPEC section 2).
  IPSNET_ARG(bool, use_pos) = false;
  /// The dissertation's semantic and diversity losses (SPEC section 3), weighted.
  IPSNET_ARG(bool, semantic_diversity_loss) = false;
  IPSNET_ARG(double, w_div) = 3.0;
  IPSNET_ARG(double, w_sem) = 1.0;
};

class IPSNet : public Module {
 public:
  /// Draws every initial value from `gen` (encoder, projection, aggregator,
  /// heads in that order). Dropout draws from `dropout_gen` when given, else
  /// from module-owned generators seeded with transformer.dropout_seed.
  IPSNet(const IPSNetOptions& options, Generator& gen, Generator* dropout_gen = nullptr);

  /// patches: (n, C, h, w) for a ResNet encoder, (n, F) for features -> (n, D)
  Tensor encode(const Tensor& patches);
  /// emb: (B, L, D), idx: (B, L) int64 patch indices -> emb plus their
  /// positional encodings (emb itself when use_pos is off).
  Tensor add_positions(const Tensor& emb, const Tensor& idx);
  /// Computes the positional encodings of patches 0..n-1 ahead (else they
  /// are computed, and the table grown, when first needed).
  void reserve_positions(int64_t n, Device device);
  /// Selection scores of candidates: emb (B, L, D) without positions, idx (B, L) -> (B, L).
  Tensor score(const Tensor& emb, const Tensor& idx);

  /// What the network predicts from a batch's selected patches.
  struct Output {
    std::map<std::string, Tensor> logits;  // task -> (B, n_class)
    Tensor heads;                          // (B, H, n_token, D_v) per-head outputs (semantic/diversity loss only)
  };
  /// The training pass on selected patches: patches (B*M, C, h, w) or
  /// (B*M, F), idx (B, M) their indices (for the positions) -> logits per task.
  Output forward(const Tensor& patches, const Tensor& idx);
  /// The total loss of an Output: the mean task loss, plus w_div * L_div +
  /// w_sem * L_sem with the dissertation's losses. parts (optional) gets each
  /// task's loss by name and "_div" / "_sem".
  Tensor loss(const Output& out, const std::map<std::string, Tensor>& targets,
              std::map<std::string, double>* parts = nullptr);

  /// The selection's view of the network: eval mode, no gradients, and with
  /// fold_bn a ResNet encoder's BatchNorms folded; all restored on exit.
  class SelectionScope {
   public:
    SelectionScope(IPSNet& net, bool fold_bn);
    ~SelectionScope();
    SelectionScope(const SelectionScope&) = delete;
    SelectionScope& operator=(const SelectionScope&) = delete;

   private:
    IPSNet& net_;
    bool was_training_, fold_before_;
    NoGradGuard no_grad_;
  };

  /// Loads torchvision ResNet weights (names without prefix) into the
  /// encoder, keeping a fresh conv1 when the channel count differs; names the
  /// model lacks (fc.*) are skipped.
  void load_pretrained_encoder(const TensorDict& weights);
  /// Frozen-backbone strategies: every stage frozen (0), or all but the last n.
  void freeze_encoder(int n_trainable_stages);
  /// Training pass of a ResNet encoder: recompute BN+ReLU and stem outputs in backward.
  void set_recompute(bool on);
  /// emb: (B, L, D) (positional encoding already added) -> (B, n_token, D)
  Tensor aggregate(const Tensor& emb);
  /// emb: (B, L, D) -> {tokens (B, n_token, D), per-head outputs (B, H, n_token, D_v)}
  std::pair<Tensor, Tensor> aggregate_with_heads(const Tensor& emb);
  /// tokens: (B, n_token, D) -> task -> logits (B, n_class); token k feeds task k.
  std::map<std::string, Tensor> heads(const Tensor& tokens);
  /// Mean over tasks of each task's loss (see task_loss).
  /// logits: task -> (B, n_class); targets: task -> (B) int64 or (B, n_class) float.
  /// parts (optional) gets each task's loss by name.
  Tensor loss(const std::map<std::string, Tensor>& logits, const std::map<std::string, Tensor>& targets,
              std::map<std::string, double>* parts = nullptr) const;
  /// Softmax task: cross_entropy(logits, target) = NLL(log_softmax(logits)).
  /// Sigmoid task: binary_cross_entropy_with_logits(logits, target).
  /// (The reference computes NLL(log(softmax + 1e-6)) and BCE(sigmoid(logits));
  /// these are the same functions without the 1e-6 / log(0) clamps: the stable
  /// form differs from the reference by at most ~1e-6/p per sample and has
  /// exact gradients where the reference's saturate.)
  Tensor task_loss(const TaskSpec& task, const Tensor& logits, const Tensor& target) const;
  /// Probabilities from logits: softmax or sigmoid per the task. logits (B, n_class).
  Tensor activate(const TaskSpec& task, const Tensor& logits) const;
  /// emb_plus_pos: (B, L, D) -> selection scores (B, L)
  Tensor get_scores(const Tensor& emb_plus_pos);

  const IPSNetOptions& options() const { return options_; }
  const std::vector<TaskSpec>& tasks() const { return options_.tasks(); }
  /// Width of the encoder's own output (before encoder_proj).
  int64_t encoder_out() const { return encoder_out_; }
  int64_t D() const { return options_.transformer().D(); }

  std::shared_ptr<Module> encoder_;         // ResNet or the feature projector Sequential
  std::shared_ptr<Linear> encoder_proj_;    // Linear(C_out, D) or null
  std::shared_ptr<Transformer> transf_;
  std::shared_ptr<Module> output_layers_;   // task -> Sequential(Linear(D, n_class))
  std::map<std::string, std::shared_ptr<Linear>> head_;  // task -> its Linear
  std::shared_ptr<Linear> fb_;              // transf.fb, semantic/diversity loss only

 private:
  /// The dissertation's diversity (mean pairwise cosine of the heads' outputs)
  /// and semantic (each head alone through fb, MLP and heads) losses.
  Tensor diversity_loss(const Tensor& heads) const;
  Tensor semantic_loss(const Tensor& heads, const std::map<std::string, Tensor>& targets);

  IPSNetOptions options_;
  int64_t encoder_out_ = 0;
  ResNet* resnet_ = nullptr;  // the encoder when it is a ResNet
  Tensor pos_;                // (n, D) positional encodings computed so far (grown on demand)
};

}  // namespace ipsnet

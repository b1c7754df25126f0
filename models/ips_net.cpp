#include "models/ips_net.h"

namespace ipsnet {

IPSNet::IPSNet(const IPSNetOptions& o, Generator& gen, Generator* dropout_gen) : Module("IPSNet"), options_(o) {
  const AggregatorOptions& t = o.transformer();
  const int64_t D = t.D();
  IPSNET_CHECK(!o.tasks().empty(), "IPSNet: at least one task is required");
  IPSNET_CHECK(static_cast<int64_t>(o.tasks().size()) == t.n_token(), "IPSNet: ", o.tasks().size(),
               " task(s) but n_token ", t.n_token(), ": one token per task");
  if (o.encoder() == "features") {
    encoder_ = register_module("encoder", make_feature_projector(o.n_features(), D, gen, o.dtype()));
    encoder_out_ = D;
  } else {
    int depth = o.encoder() == "resnet18" ? 18 : o.encoder() == "resnet34" ? 34 : o.encoder() == "resnet50" ? 50 : 0;
    IPSNET_CHECK(depth != 0, "IPSNet: unknown encoder '", o.encoder(),
                 "' (expected resnet18, resnet34, resnet50 or features)");
    auto resnet = std::make_shared<ResNet>(
        ResNetOptions().depth(depth).in_channels(o.in_channels()).n_res_blocks(o.n_res_blocks()).dtype(o.dtype()),
        gen);
    encoder_out_ = resnet->out_channels();
    encoder_ = register_module("encoder", resnet);
    if (encoder_out_ != D)
      encoder_proj_ = register_module(
          "encoder_proj", std::make_shared<Linear>(LinearOptions(encoder_out_, D).dtype(o.dtype()), gen));
  }
  transf_ = register_module("transf", std::make_shared<Transformer>(t, gen, dropout_gen));
  output_layers_ = register_module("output_layers", std::make_shared<Module>("ModuleDict"));
  for (const TaskSpec& task : o.tasks()) {
    IPSNET_CHECK(task.n_class > 0, "IPSNet: task '", task.name, "' needs n_class > 0, got ", task.n_class);
    IPSNET_CHECK(head_.count(task.name) == 0, "IPSNet: duplicate task name '", task.name, "'");
    auto seq = std::make_shared<Sequential>();
    head_[task.name] = seq->push_back(std::make_shared<Linear>(LinearOptions(D, task.n_class).dtype(o.dtype()), gen));
    output_layers_->register_module(task.name, seq);
  }
}

Tensor IPSNet::encode(const Tensor& patches) {
  Tensor emb = encoder_->forward(patches);  // (n, C_out)
  return encoder_proj_ ? encoder_proj_->forward(emb) : emb;
}

Tensor IPSNet::aggregate(const Tensor& emb) { return transf_->forward(emb); }

std::pair<Tensor, Tensor> IPSNet::aggregate_with_heads(const Tensor& emb) { return transf_->forward_with_heads(emb); }

std::map<std::string, Tensor> IPSNet::heads(const Tensor& tokens) {
  check_defined(tokens, "IPSNet::heads", "tokens");
  const int64_t T = static_cast<int64_t>(options_.tasks().size());
  IPSNET_CHECK(tokens.dim() == 3 && tokens.size(1) == T && tokens.size(2) == D(), "IPSNet::heads: tokens ",
               shape_str(tokens.shape()), " must be (B, ", T, ", ", D(), ")");
  std::map<std::string, Tensor> out;
  for (int64_t k = 0; k < T; ++k) {
    const TaskSpec& task = options_.tasks()[static_cast<size_t>(k)];
    out[task.name] = head_.at(task.name)->forward(tokens.select(1, k));  // (B, n_class)
  }
  return out;
}

Tensor IPSNet::activate(const TaskSpec& task, const Tensor& logits) const {
  return task.act == TaskActivation::Softmax ? ops::softmax(logits, -1) : ops::sigmoid(logits);
}

Tensor IPSNet::task_loss(const TaskSpec& task, const Tensor& logits, const Tensor& target) const {
  check_defined(target, "IPSNet::loss", task.name.c_str());
  if (task.act == TaskActivation::Softmax) return ops::cross_entropy(logits, target);
  IPSNET_CHECK(target.shape() == logits.shape(), "IPSNet::loss: task '", task.name, "' target ",
               shape_str(target.shape()), " vs logits ", shape_str(logits.shape()), ": sigmoid targets are multi-hot");
  Tensor tg = target.dtype() == logits.dtype() ? target : target.to(logits.dtype());
  return ops::binary_cross_entropy_with_logits(logits, tg);
}

Tensor IPSNet::loss(const std::map<std::string, Tensor>& logits, const std::map<std::string, Tensor>& targets) const {
  Tensor total;
  for (const TaskSpec& task : options_.tasks()) {
    auto l = logits.find(task.name);
    auto t = targets.find(task.name);
    IPSNET_CHECK(l != logits.end(), "IPSNet::loss: no logits for task '", task.name, "'");
    IPSNET_CHECK(t != targets.end(), "IPSNet::loss: no target for task '", task.name, "'");
    Tensor li = task_loss(task, l->second, t->second);
    total = total.defined() ? total + li : li;
  }
  return total / static_cast<double>(options_.tasks().size());
}

Tensor IPSNet::get_scores(const Tensor& emb_plus_pos) { return transf_->get_scores(emb_plus_pos); }

}  // namespace ipsnet

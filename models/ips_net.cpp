#include "models/ips_net.h"

#include <algorithm>

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
    resnet_ = resnet.get();
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
  if (o.semantic_diversity_loss())
    fb_ = transf_->register_module("fb", std::make_shared<Linear>(LinearOptions(t.D_v(), D).bias(false).dtype(o.dtype()), gen));
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

Tensor IPSNet::loss(const std::map<std::string, Tensor>& logits, const std::map<std::string, Tensor>& targets,
                    std::map<std::string, double>* parts) const {
  Tensor total;
  for (const TaskSpec& task : options_.tasks()) {
    auto l = logits.find(task.name);
    auto t = targets.find(task.name);
    IPSNET_CHECK(l != logits.end(), "IPSNet::loss: no logits for task '", task.name, "'");
    IPSNET_CHECK(t != targets.end(), "IPSNet::loss: no target for task '", task.name, "'");
    Tensor li = task_loss(task, l->second, t->second);
    if (parts) (*parts)[task.name] = li.item();
    total = total.defined() ? ops::add(total, li) : li;
  }
  return ops::mul(total, 1.0 / static_cast<double>(options_.tasks().size()));
}

Tensor IPSNet::add_positions(const Tensor& emb, const Tensor& idx) {
  if (!options_.use_pos()) return emb;
  IPSNET_CHECK(emb.dim() == 3 && idx.dim() == 2 && idx.size(0) == emb.size(0) && idx.size(1) == emb.size(1),
               "IPSNet::add_positions: emb ", shape_str(emb.shape()), " and idx ", shape_str(idx.shape()),
               " must be (B, L, D) and (B, L)");
  Tensor flat = idx.reshape({-1}).to(Device::cpu());
  int64_t need = 0;
  const int64_t* ip = flat.contiguous().data<int64_t>();
  for (int64_t i = 0; i < flat.numel(); ++i) need = std::max(need, ip[i] + 1);
  // pe[p] depends on p alone, so the table grows without changing earlier rows.
  if (!pos_.defined() || pos_.size(0) < need || pos_.device() != emb.device())
    pos_ = sinusoidal_positional_encoding(std::max(need, pos_.defined() ? pos_.size(0) : int64_t{0}), D(), emb.dtype(),
                                          emb.device());
  Tensor rows = ops::index_select(pos_, 0, flat.to(emb.device()));
  return ops::add(emb, rows.reshape({emb.size(0), emb.size(1), D()}));
}

void IPSNet::reserve_positions(int64_t n, Device device) {
  if (options_.use_pos() && (!pos_.defined() || pos_.size(0) < n || pos_.device() != device))
    pos_ = sinusoidal_positional_encoding(n, D(), options_.dtype(), device);
}

Tensor IPSNet::score(const Tensor& emb, const Tensor& idx) { return get_scores(add_positions(emb, idx)); }

IPSNet::Output IPSNet::forward(const Tensor& patches, const Tensor& idx) {
  IPSNET_CHECK(idx.dim() == 2 && patches.size(0) == idx.numel(), "IPSNet::forward: ", patches.size(0),
               " patches for indices ", shape_str(idx.shape()), " (expected B*M patches for (B, M))");
  const int64_t B = idx.size(0), M = idx.size(1);
  Tensor emb = add_positions(encode(patches).reshape({B, M, D()}), idx);
  Output out;
  Tensor tokens;
  if (fb_) {
    auto th = aggregate_with_heads(emb);
    tokens = th.first;
    out.heads = th.second;  // (B, H, n_token, D_v)
  } else {
    tokens = aggregate(emb);
  }
  out.logits = heads(tokens);
  return out;
}

Tensor IPSNet::loss(const Output& out, const std::map<std::string, Tensor>& targets,
                    std::map<std::string, double>* parts) {
  Tensor total = loss(out.logits, targets, parts);
  if (!fb_ || !out.heads.defined()) return total;
  Tensor l_div = diversity_loss(out.heads);
  Tensor l_sem = semantic_loss(out.heads, targets);
  if (parts) {
    (*parts)["_div"] = l_div.item();
    (*parts)["_sem"] = l_sem.item();
  }
  return ops::add(total, ops::add(ops::mul(l_div, options_.w_div()), ops::mul(l_sem, options_.w_sem())));
}

Tensor IPSNet::diversity_loss(const Tensor& heads) const {
  // Mean over head pairs i<j of the batch mean of cos(vec O_i, vec O_j).
  const int64_t B = heads.size(0), H = heads.size(1);
  Tensor flat = heads.reshape({B, H, -1});
  Tensor norm = ops::sqrt(ops::add(ops::sum(ops::square(flat), {2}, true), 1e-12));
  Tensor unit = ops::div(flat, norm);
  Tensor gram = ops::matmul(unit, unit.transpose(1, 2));  // (B, H, H)
  std::vector<float> upper(static_cast<size_t>(H * H), 0.0f);
  for (int64_t i = 0; i < H; ++i)
    for (int64_t j = i + 1; j < H; ++j) upper[static_cast<size_t>(i * H + j)] = 1.0f;
  Tensor mask = Tensor::from_vector(upper, {H, H}, gram.device());
  double pairs = static_cast<double>(H * (H - 1) / 2);
  return ops::mul(ops::sum(ops::mul(gram, mask)), 1.0 / (pairs * static_cast<double>(B)));
}

Tensor IPSNet::semantic_loss(const Tensor& heads, const std::map<std::string, Tensor>& targets) {
  // Every head's output alone through the shared fb, the MLP and the task heads.
  const int64_t H = heads.size(1);
  Tensor l_sem;
  for (int64_t h = 0; h < H; ++h) {
    Tensor oh = heads.select(1, h);  // (B, n_token, D_v)
    Tensor lh = loss(this->heads(transf_->mlp_->forward(fb_->forward(oh))), targets);
    l_sem = l_sem.defined() ? ops::add(l_sem, lh) : lh;
  }
  return ops::mul(l_sem, 1.0 / static_cast<double>(H));
}

IPSNet::SelectionScope::SelectionScope(IPSNet& net, bool fold_bn)
    : net_(net), was_training_(net.is_training()), fold_before_(net.resnet_ ? net.resnet_->fold_bn() : false) {
  net_.eval();
  if (fold_bn && net_.resnet_) net_.resnet_->set_fold_bn(true);
}

IPSNet::SelectionScope::~SelectionScope() {
  if (net_.resnet_) net_.resnet_->set_fold_bn(fold_before_);
  net_.train(was_training_);
}

void IPSNet::load_pretrained_encoder(const TensorDict& weights) {
  IPSNET_CHECK(resnet_ != nullptr, "pretrained_path: only ResNet encoders load pretrained weights");
  // Keep the fresh conv1 when the channel count differs (1-channel input).
  TensorDict filtered;
  TensorDict own = resnet_->state_dict();
  for (const auto& it : weights) {
    if (!own.contains(it.first)) continue;  // e.g. fc.* of a full torchvision model
    if (own.at(it.first).shape() != it.second.shape() && it.first == "conv1.weight") continue;
    filtered.insert(it.first, it.second);
  }
  resnet_->load_state_dict(filtered, false);
}

void IPSNet::freeze_encoder(int n_trainable_stages) {
  IPSNET_CHECK(resnet_ != nullptr, "freeze: only ResNet encoders can be frozen");
  resnet_->freeze_backbone(n_trainable_stages);
}

void IPSNet::set_recompute(bool on) {
  if (resnet_) resnet_->set_recompute(on);
}

Tensor IPSNet::get_scores(const Tensor& emb_plus_pos) { return transf_->get_scores(emb_plus_pos); }

}  // namespace ipsnet

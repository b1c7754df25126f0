#include "engine/optim/optim.h"

#include <cmath>
#include <map>

#include "engine/autograd/grad_mode.h"
#include "engine/backend/backend.h"
#include "engine/ops/ops.h"

namespace ipsnet {

AdamW::AdamW(std::vector<std::pair<std::string, Tensor>> params, AdamWOptions opt) : opt_(opt) {
  IPSNET_CHECK(opt.lr >= 0, "AdamW: lr must be >= 0, got ", opt.lr);
  IPSNET_CHECK(opt.beta1 >= 0 && opt.beta1 < 1 && opt.beta2 >= 0 && opt.beta2 < 1,
               "AdamW: betas must be in [0, 1), got ", opt.beta1, ", ", opt.beta2);
  IPSNET_CHECK(opt.eps > 0, "AdamW: eps must be > 0, got ", opt.eps);
  for (auto& [name, p] : params) {
    if (!p.requires_grad()) continue;  // frozen parameters take no state
    IPSNET_CHECK(p.is_contiguous(), "AdamW: parameter ", name, " is not contiguous");
    Slot s;
    s.name = name;
    s.param = p;
    s.m = Tensor::zeros(p.shape(), p.dtype(), p.device());
    s.v = Tensor::zeros(p.shape(), p.dtype(), p.device());
    s.decay = !(opt.exclude_norm_and_bias && p.dim() <= 1);
    slots_.push_back(std::move(s));
  }
}

void AdamW::step(double lr) {
  NoGradGuard ng;
  ++step_;
  for (Slot& s : slots_) {
    Tensor g = s.param.grad();
    if (!g.defined()) continue;
    g = g.contiguous();
    IPSNET_CHECK(g.shape() == s.param.shape(), "AdamW: gradient of ", s.name, " has shape ",
                 shape_str(g.shape()), ", parameter ", shape_str(s.param.shape()));
    const double wd = s.decay ? opt_.weight_decay : 0.0;
    if (!opt_.decoupled && wd != 0.0) g = ops::add(g, ops::mul(s.param.detach(), wd));  // Adam: L2 in the gradient
    backend_for(s.param.device())
        .adamw(s.param, g, s.m, s.v, lr, opt_.beta1, opt_.beta2, opt_.eps, opt_.decoupled ? wd : 0.0, step_);
    s.param.storage()->bump_version();
  }
}

void AdamW::zero_grad() {
  for (Slot& s : slots_) s.param.zero_grad();
}

std::vector<std::pair<std::string, Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const Slot& s : slots_) {
    out.emplace_back(s.name + ".exp_avg", s.m);
    out.emplace_back(s.name + ".exp_avg_sq", s.v);
  }
  return out;
}

void AdamW::load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t step) {
  std::map<std::string, Tensor> by_name(state.begin(), state.end());
  for (Slot& s : slots_) {
    for (auto [suffix, dst] : {std::make_pair(".exp_avg", &s.m), std::make_pair(".exp_avg_sq", &s.v)}) {
      auto it = by_name.find(s.name + suffix);
      IPSNET_CHECK(it != by_name.end(), "AdamW: optimizer state ", s.name, suffix, " missing from the checkpoint");
      IPSNET_CHECK(it->second.shape() == dst->shape(), "AdamW: optimizer state ", s.name, suffix, " has shape ",
                   shape_str(it->second.shape()), ", expected ", shape_str(dst->shape()));
      NoGradGuard ng;
      dst->copy_(it->second);
    }
  }
  step_ = step;
}

SGD::SGD(std::vector<std::pair<std::string, Tensor>> params, SGDOptions opt) : opt_(opt) {
  IPSNET_CHECK(opt.momentum >= 0 && opt.momentum < 1, "SGD: momentum must be in [0, 1), got ", opt.momentum);
  IPSNET_CHECK(opt.weight_decay >= 0, "SGD: weight_decay must be >= 0, got ", opt.weight_decay);
  for (auto& [name, p] : params) {
    if (!p.requires_grad()) continue;  // frozen parameters take no state
    IPSNET_CHECK(p.is_contiguous(), "SGD: parameter ", name, " is not contiguous");
    Slot s;
    s.name = name;
    s.param = p;
    if (opt.momentum > 0) s.buf = Tensor::zeros(p.shape(), p.dtype(), p.device());
    s.decay = !(opt.exclude_norm_and_bias && p.dim() <= 1);
    slots_.push_back(std::move(s));
  }
}

void SGD::step(double lr) {
  NoGradGuard ng;
  ++step_;
  for (Slot& s : slots_) {
    Tensor g = s.param.grad();
    if (!g.defined()) continue;
    IPSNET_CHECK(g.shape() == s.param.shape(), "SGD: gradient of ", s.name, " has shape ", shape_str(g.shape()),
                 ", parameter ", shape_str(s.param.shape()));
    Tensor d = g;
    if (s.decay && opt_.weight_decay != 0.0) d = ops::add(g, ops::mul(s.param.detach(), opt_.weight_decay));
    if (s.buf.defined()) {
      // buf starts at zero: momentum * 0 + d is d exactly, torch's first step.
      ops::mul_(s.buf, opt_.momentum);
      ops::add_(s.buf, d);
      d = s.buf;
    }
    ops::add_(s.param, ops::mul(d, -lr));
  }
}

void SGD::zero_grad() {
  for (Slot& s : slots_) s.param.zero_grad();
}

std::vector<std::pair<std::string, Tensor>> SGD::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const Slot& s : slots_)
    if (s.buf.defined()) out.emplace_back(s.name + ".momentum_buffer", s.buf);
  return out;
}

void SGD::load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t step) {
  std::map<std::string, Tensor> by_name(state.begin(), state.end());
  for (Slot& s : slots_) {
    if (!s.buf.defined()) continue;
    auto it = by_name.find(s.name + ".momentum_buffer");
    IPSNET_CHECK(it != by_name.end(), "SGD: optimizer state ", s.name, ".momentum_buffer missing from the checkpoint");
    IPSNET_CHECK(it->second.shape() == s.buf.shape(), "SGD: optimizer state ", s.name, ".momentum_buffer has shape ",
                 shape_str(it->second.shape()), ", expected ", shape_str(s.buf.shape()));
    NoGradGuard ng;
    s.buf.copy_(it->second);
  }
  step_ = step;
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  NoGradGuard ng;
  double total = 0;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    total += ops::sum(ops::square(g.to(DType::Float32))).item();
  }
  double norm = std::sqrt(total);
  if (max_norm > 0 && norm > max_norm) {
    double scale = max_norm / (norm + 1e-6);
    for (const Tensor& p : params) {
      Tensor g = p.grad();
      if (g.defined()) ops::mul_(g, scale);
    }
  }
  return norm;
}

double warmup_cosine_lr(double base_lr, int64_t step, int64_t warmup_steps, int64_t total_steps,
                        double final_factor) {
  if (warmup_steps > 0 && step < warmup_steps)
    return base_lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  int64_t decay_steps = std::max<int64_t>(1, total_steps - warmup_steps - 1);
  double t = std::min(1.0, static_cast<double>(step - warmup_steps) / static_cast<double>(decay_steps));
  double lo = final_factor * base_lr;
  return lo + 0.5 * (base_lr - lo) * (1.0 + std::cos(M_PI * t));
}

}  // namespace ipsnet

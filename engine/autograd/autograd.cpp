#include <algorithm>
#include <unordered_map>

#include "engine/autograd/grad_mode.h"
#include "engine/autograd/node.h"
#include "engine/ops/ops.h"
#include "engine/tensor/bf16.h"

namespace ipsnet {

namespace {
thread_local bool tl_grad_enabled = true;
}

bool grad_enabled() { return tl_grad_enabled; }
void set_grad_enabled(bool on) { tl_grad_enabled = on; }
NoGradGuard::NoGradGuard() : prev_(tl_grad_enabled) { tl_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { tl_grad_enabled = prev_; }
thread_local bool tl_conv_bf16 = false;
bool conv_bf16_enabled() { return tl_conv_bf16; }
ConvBf16Guard::ConvBf16Guard(bool on) : prev_(tl_conv_bf16) { tl_conv_bf16 = on; }
ConvBf16Guard::~ConvBf16Guard() { tl_conv_bf16 = prev_; }
thread_local GradReadyHook* tl_grad_ready_hook = nullptr;
GradReadyHook* grad_ready_hook() { return tl_grad_ready_hook; }
GradReadyHookGuard::GradReadyHookGuard(GradReadyHook* hook) : prev_(tl_grad_ready_hook) { tl_grad_ready_hook = hook; }
GradReadyHookGuard::~GradReadyHookGuard() { tl_grad_ready_hook = prev_; }

std::atomic<int64_t> Node::live_{0};
Node::Node() { live_.fetch_add(1, std::memory_order_relaxed); }
Node::~Node() { live_.fetch_sub(1, std::memory_order_relaxed); }
int64_t Node::live_count() { return live_.load(); }

std::vector<Tensor> AccumulateGrad::apply(const Tensor& grad) {
  auto leaf = leaf_.lock();
  if (!leaf) return {};
  Tensor t(leaf);
  Tensor g = grad;
  if (g.shape() != t.shape()) g = ops::sum_to(g, t.shape());
  AutogradMeta& m = *leaf->autograd_;
  if (!m.grad.defined()) {
    // Own a fresh contiguous copy: grad may be a view of another buffer.
    m.grad = g.detach().clone();
  } else {
    NoGradGuard ng;
    ops::add_(m.grad, g);
  }
  if (tl_grad_ready_hook) tl_grad_ready_hook->ready(leaf.get());
  return {};
}

void set_recompute(const Tensor& out, std::shared_ptr<const Recompute> recipe) {
  IPSNET_CHECK(out.defined() && out.is_contiguous() && out.offset() == 0 &&
                   out.nbytes() == out.storage()->nbytes(),
               "set_recompute: expected a fresh contiguous tensor that spans its storage");
  out.storage()->recompute = std::move(recipe);
  out.storage()->recompute_version = out.storage()->version();
}

SavedTensor::SavedTensor(const Tensor& t) {
  if (!t.defined()) return;
  const auto& st = t.storage();
  if (st->recompute && st->version() == st->recompute_version && t.is_contiguous() &&
      t.offset() == 0 && t.nbytes() == st->nbytes()) {
    recipe_ = st->recompute;
    weak_ = st;
    version_ = st->version();
    shape_ = t.shape();
    dtype_ = t.dtype();
    return;
  }
  t_ = t.detach();
  version_ = t.storage()->version();
}

SavedTensor SavedTensor::bf16(const Tensor& t) {
  if (!t.defined() || t.dtype() != DType::Float32 || !bf16_storage_supported(t.device()) || !t.is_contiguous() ||
      t.offset() != 0 || t.nbytes() != t.storage()->nbytes() || t.nbytes() == 0)
    return SavedTensor(t);
  const auto& st = t.storage();
  if (st->recompute && st->version() == st->recompute_version) return SavedTensor(t);
  SavedTensor s;
  s.bf16_ = true;
  s.shape_ = t.shape();
  s.dtype_ = DType::Float32;
  std::shared_ptr<Storage> copy = st->bf16_copy.lock();
  if (copy && st->bf16_copy_version == st->version() && copy->nbytes() * 2 == st->nbytes()) {
    s.t_ = Tensor(std::make_shared<TensorImpl>(copy, t.shape(), contiguous_strides(t.shape()), 0, DType::BFloat16));
  } else {
    s.t_ = t.detach().to(DType::BFloat16);
    st->bf16_copy = s.t_.storage();
    st->bf16_copy_version = st->version();
  }
  s.version_ = s.t_.storage()->version();
  return s;
}

namespace {
void check_saved_version(const Storage& st, uint64_t saved, const char* node_name) {
  IPSNET_CHECK(st.version() == saved, node_name,
               ": a tensor saved for backward was modified in place after it was saved (version ", saved, " -> ",
               st.version(), ")");
}
}  // namespace

Tensor SavedTensor::unpack(const char* node_name) const {
  if (recipe_) {
    if (std::shared_ptr<Storage> st = weak_.lock()) {
      check_saved_version(*st, version_, node_name);
      return Tensor(std::make_shared<TensorImpl>(st, shape_, contiguous_strides(shape_), 0, dtype_));
    }
    NoGradGuard ng;
    Tensor r = recipe_->run();
    IPSNET_CHECK(r.shape() == shape_ && r.dtype() == dtype_, node_name,
                 ": recomputing a saved tensor gave ", shape_str(r.shape()), " instead of ", shape_str(shape_));
    return r;
  }
  if (!t_.defined()) return t_;
  check_saved_version(*t_.storage(), version_, node_name);
  if (bf16_) return t_.to(DType::Float32);
  return t_;
}

Tensor SavedTensor::unpack_stored(const char* node_name) const {
  if (!bf16_) return unpack(node_name);
  check_saved_version(*t_.storage(), version_, node_name);
  return t_;
}

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

bool any_requires_grad(const std::vector<Tensor>& inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

std::shared_ptr<Node> gradient_edge(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return nullptr;
  AutogradMeta& m = *t.impl()->autograd_;
  if (m.grad_fn) return m.grad_fn;
  auto acc = m.accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t.impl_ptr());
    m.accumulator = acc;
  }
  return acc;
}

void set_history(Tensor& out, const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs) {
  node->next_.clear();
  node->next_.reserve(inputs.size());
  for (const Tensor& t : inputs) node->next_.push_back(gradient_edge(t));
  TensorImpl* impl = out.impl();
  if (!impl->autograd_) impl->autograd_ = std::make_unique<AutogradMeta>();
  impl->autograd_->requires_grad = true;
  impl->autograd_->grad_fn = node;
}

void run_backward(const Tensor& root, const Tensor& grad, bool retain_graph) {
  std::shared_ptr<Node> root_node = gradient_edge(root);
  IPSNET_CHECK(root_node != nullptr,
               "backward: the tensor does not require grad and has no grad_fn");
  // 1. Dependency counts by an iterative depth-first walk.
  std::unordered_map<Node*, int> deps;
  std::vector<Node*> stack{root_node.get()};
  deps[root_node.get()] = 0;
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const auto& nx : n->next_) {
      if (!nx) continue;
      auto it = deps.find(nx.get());
      if (it == deps.end()) {
        deps[nx.get()] = 1;
        stack.push_back(nx.get());
      } else {
        it->second++;
      }
    }
  }
  // 2. Process nodes whose every consumer has delivered its gradient.
  std::unordered_map<Node*, Tensor> grads;
  grads[root_node.get()] = grad;
  std::vector<std::shared_ptr<Node>> ready{root_node};
  NoGradGuard no_grad;  // backward itself records nothing (no double backward)
  while (!ready.empty()) {
    std::shared_ptr<Node> n = std::move(ready.back());
    ready.pop_back();
    IPSNET_CHECK(!n->released_, "backward: trying to backward through ", n->name(),
                 " a second time; its saved tensors were freed (pass retain_graph=true)");
    Tensor g = std::move(grads[n.get()]);
    grads.erase(n.get());
    std::vector<Tensor> in_grads = n->apply_owned(std::move(g));
    g = Tensor();
    if (!retain_graph && dynamic_cast<AccumulateGrad*>(n.get()) == nullptr) {
      n->release();
      n->released_ = true;
    }
    for (size_t i = 0; i < n->next_.size(); ++i) {
      const auto& nx = n->next_[i];
      if (!nx) continue;
      if (i < in_grads.size() && in_grads[i].defined()) {
        auto it = grads.find(nx.get());
        if (it == grads.end() || !it->second.defined()) {
          grads[nx.get()] = in_grads[i];
        } else {
          // Summed in place when the running total is ours alone (not a
          // tensor some node also returned or kept): one map less at the peak.
          Tensor& acc = it->second;
          if (acc.storage().use_count() == 1 && acc.is_contiguous() && acc.shape() == in_grads[i].shape() &&
              acc.dtype() == in_grads[i].dtype() && !acc.same(in_grads[i]))
            ops::add_(acc, in_grads[i]);
          else
            acc = ops::add(acc, in_grads[i]);
        }
      }
      if (--deps[nx.get()] == 0) {
        if (grads.count(nx.get()) && grads[nx.get()].defined()) {
          ready.push_back(nx);
        } else {
          grads.erase(nx.get());
          // No gradient reached this node; still release its descendants' counts.
          std::vector<std::shared_ptr<Node>> skip{nx};
          while (!skip.empty()) {
            auto s = skip.back();
            skip.pop_back();
            for (const auto& sn : s->next_) {
              if (!sn) continue;
              if (--deps[sn.get()] == 0) {
                if (grads.count(sn.get()) && grads[sn.get()].defined()) ready.push_back(sn);
                else skip.push_back(sn);
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace ipsnet

#include "layers/module.h"

#include <algorithm>
#include <sstream>

namespace ipsnet {

// ---- TensorDict ---------------------------------------------------------------

void TensorDict::insert(const std::string& name, const Tensor& t) {
  auto it = index_.find(name);
  if (it != index_.end()) {
    items_[it->second].second = t;
    return;
  }
  index_.emplace(name, items_.size());
  items_.emplace_back(name, t);
}

const Tensor& TensorDict::at(const std::string& name) const {
  auto it = index_.find(name);
  IPSNET_CHECK(it != index_.end(), "TensorDict: no tensor named '", name, "'");
  return items_[it->second].second;
}

Tensor& TensorDict::at(const std::string& name) {
  auto it = index_.find(name);
  IPSNET_CHECK(it != index_.end(), "TensorDict: no tensor named '", name, "'");
  return items_[it->second].second;
}

std::vector<std::string> TensorDict::keys() const {
  std::vector<std::string> k;
  k.reserve(items_.size());
  for (const auto& it : items_) k.push_back(it.first);
  return k;
}

// ---- helpers --------------------------------------------------------------------

void rebind_tensor(const Tensor& dst, const Tensor& src) {
  TensorImpl* d = dst.impl();
  TensorImpl* s = src.impl();
  if (d == s) return;
  d->storage_ = s->storage_;
  d->shape_ = s->shape_;
  d->strides_ = s->strides_;
  d->offset_ = s->offset_;
  d->dtype_ = s->dtype_;
}

// ---- Module ---------------------------------------------------------------------

Tensor Module::forward(const Tensor&) {
  IPSNET_FAIL(type_name_, ": this module has no single-tensor forward");
}

void Module::check_new_name(const std::string& name, const char* what) const {
  IPSNET_CHECK(!name.empty() && name.find('.') == std::string::npos, type_name_, ": ", what, " name '", name,
               "' must be non-empty and contain no '.'");
  auto taken = [&](const auto& v) {
    return std::any_of(v.begin(), v.end(), [&](const auto& p) { return p.first == name; });
  };
  IPSNET_CHECK(!taken(params_) && !taken(buffers_) && !taken(children_), type_name_, ": cannot register ", what,
               " '", name, "': the name is already in use");
}

Tensor& Module::register_parameter(const std::string& name, Tensor t, bool requires_grad) {
  check_new_name(name, "parameter");
  check_defined(t, "register_parameter", name.c_str());
  IPSNET_CHECK(is_floating(t.dtype()), type_name_, ": parameter '", name, "' must be floating, got ",
               dtype_name(t.dtype()));
  IPSNET_CHECK(t.is_leaf(), type_name_, ": parameter '", name, "' must be a leaf tensor (detach it first)");
  t.set_requires_grad(requires_grad);
  params_.emplace_back(name, t);
  return params_.back().second;
}

Tensor& Module::register_buffer(const std::string& name, Tensor t) {
  check_new_name(name, "buffer");
  check_defined(t, "register_buffer", name.c_str());
  buffers_.emplace_back(name, t);
  return buffers_.back().second;
}

void Module::register_module_impl(const std::string& name, std::shared_ptr<Module> m) {
  check_new_name(name, "module");
  IPSNET_CHECK(m != nullptr, type_name_, ": cannot register a null module as '", name, "'");
  children_.emplace_back(name, std::move(m));
}

std::shared_ptr<Module> Module::child(const std::string& name) const {
  for (const auto& c : children_)
    if (c.first == name) return c.second;
  IPSNET_FAIL(type_name_, ": no child module named '", name, "'");
}

void Module::collect(const std::string& prefix, bool params, bool buffers, bool recurse, TensorDict* out) const {
  if (params)
    for (const auto& p : params_) out->insert(prefix + p.first, p.second);
  if (buffers)
    for (const auto& b : buffers_) out->insert(prefix + b.first, b.second);
  if (!recurse) return;
  for (const auto& c : children_) c.second->collect(prefix + c.first + ".", params, buffers, true, out);
}

TensorDict Module::named_parameters(bool recurse) const {
  TensorDict d;
  collect("", true, false, recurse, &d);
  return d;
}

TensorDict Module::named_buffers(bool recurse) const {
  TensorDict d;
  collect("", false, true, recurse, &d);
  return d;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> v;
  for (const auto& it : named_parameters(recurse)) v.push_back(it.second);
  return v;
}

std::vector<Tensor> Module::buffers(bool recurse) const {
  std::vector<Tensor> v;
  for (const auto& it : named_buffers(recurse)) v.push_back(it.second);
  return v;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& c : children_) c.second->train(on);
}

void Module::freeze() {
  for (auto& p : parameters()) p.set_requires_grad(false);
}

void Module::unfreeze() {
  for (auto& p : parameters()) p.set_requires_grad(true);
}

void Module::zero_grad() {
  for (auto& p : parameters()) p.zero_grad();
}

void Module::to(Device device) {
  NoGradGuard ng;
  for (auto& p : parameters()) {
    if (p.device() == device) continue;
    Tensor g = p.grad();
    rebind_tensor(p, p.detach().to(device));
    if (g.defined()) p.set_grad(g.to(device));
  }
  for (auto& b : buffers())
    if (b.device() != device) rebind_tensor(b, b.detach().to(device));
}

void Module::to(DType dtype) {
  IPSNET_CHECK(is_floating(dtype), type_name_, ".to: target dtype must be floating, got ", dtype_name(dtype));
  NoGradGuard ng;
  for (auto& p : parameters()) {
    if (p.dtype() == dtype) continue;
    Tensor g = p.grad();
    rebind_tensor(p, p.detach().to(dtype));
    if (g.defined()) p.set_grad(g.to(dtype));
  }
  for (auto& b : buffers())
    if (is_floating(b.dtype()) && b.dtype() != dtype) rebind_tensor(b, b.detach().to(dtype));
}

// ---- state dict ---------------------------------------------------------------

TensorDict Module::state_dict() const {
  TensorDict raw;
  collect("", true, true, true, &raw);
  TensorDict d;
  for (const auto& it : raw) d.insert(it.first, it.second.detach());
  return d;
}

namespace {
bool is_bn_counter(const std::string& name) {
  static const std::string leaf = "num_batches_tracked";
  return name == leaf || (name.size() > leaf.size() && name.compare(name.size() - leaf.size(), leaf.size(), leaf) == 0 &&
                          name[name.size() - leaf.size() - 1] == '.');
}
}  // namespace

LoadResult Module::load_state_dict(const TensorDict& state, bool strict) {
  TensorDict own;
  collect("", true, true, true, &own);
  LoadResult res;
  std::vector<std::string> mismatched;
  for (const auto& it : own) {
    if (!state.contains(it.first)) {
      // PyTorch writes BatchNorm's step counter, but many exported state dicts
      // drop it; its value only matters for momentum=None, which ipsnet does
      // not use. Accept it as 0; every other absent name stays an error.
      if (is_bn_counter(it.first))
        res.defaulted_keys.push_back(it.first);
      else
        res.missing_keys.push_back(it.first);
      continue;
    }
    const Tensor& src = state.at(it.first);
    if (!src.defined() || src.shape() != it.second.shape())
      mismatched.push_back(it.first + ": checkpoint " + (src.defined() ? shape_str(src.shape()) : "undefined") +
                           " vs model " + shape_str(it.second.shape()));
  }
  for (const auto& it : state)
    if (!own.contains(it.first)) res.unexpected_keys.push_back(it.first);

  bool fail = !mismatched.empty() || (strict && (!res.missing_keys.empty() || !res.unexpected_keys.empty()));
  if (fail) {
    std::ostringstream os;
    os << "load_state_dict: error(s) loading into " << type_name_ << ":";
    auto list = [&](const char* what, const std::vector<std::string>& names) {
      if (names.empty()) return;
      os << "\n  " << what << " (" << names.size() << "):";
      // A wrong architecture misses whole stages: name the first 20, count the rest.
      const size_t shown = std::min<size_t>(names.size(), 20);
      for (size_t i = 0; i < shown; ++i) os << "\n    " << names[i];
      if (shown < names.size()) os << "\n    ... and " << names.size() - shown << " more";
    };
    list("size mismatch", mismatched);
    if (strict) {
      list("missing keys", res.missing_keys);
      list("unexpected keys", res.unexpected_keys);
    }
    throw Error(os.str());
  }
  NoGradGuard ng;
  for (const std::string& name : res.defaulted_keys) {
    Tensor dst = own.at(name);
    dst.zero_();
  }
  for (const auto& it : own) {
    if (!state.contains(it.first)) continue;
    Tensor dst = it.second;
    dst.copy_(state.at(it.first).detach());
  }
  return res;
}

LoadResult Module::load_state_dict(const std::map<std::string, Tensor>& state, bool strict) {
  TensorDict d;
  for (const auto& it : state) d.insert(it.first, it.second);
  return load_state_dict(d, strict);
}

}  // namespace ipsnet

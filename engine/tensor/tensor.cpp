#include "engine/tensor/tensor.h"

#include <algorithm>
#include <cstring>
#include <iomanip>
#include <numeric>
#include <sstream>

#include "engine/autograd/grad_mode.h"
#include "engine/autograd/node.h"
#include "engine/backend/backend.h"
#include "engine/ops/ops.h"
#include "engine/random/generator.h"

namespace ipsnet {

TensorImpl::TensorImpl(std::shared_ptr<Storage> storage, Shape shape, Shape strides,
                       int64_t offset, DType dtype)
    : storage_(std::move(storage)), shape_(std::move(shape)), strides_(std::move(strides)),
      offset_(offset), dtype_(dtype) {}
TensorImpl::~TensorImpl() = default;

void check_defined(const Tensor& t, const char* op, const char* arg) {
  IPSNET_CHECK(t.defined(), op, ": argument '", arg, "' is an undefined tensor");
}

// ---- factories ----------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape)
    IPSNET_CHECK(d >= 0, "empty: negative dimension in shape ", shape_str(shape));
  IPSNET_CHECK(dtype != DType::Float64 || device.is_cpu(),
               "float64 tensors live on the CPU only (asked for ", device.str(), ")");
  size_t nbytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  auto st = std::make_shared<Storage>(nbytes, device);
  return Tensor(std::make_shared<TensorImpl>(st, shape, contiguous_strides(shape), 0, dtype));
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  backend_for(device).fill(t, value);
  return t;
}
Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }
Tensor Tensor::scalar(double value, DType dtype, Device device) { return full({}, value, dtype, device); }

Tensor Tensor::arange(int64_t n, DType dtype, Device device) {
  Tensor t = empty({n}, dtype, Device::cpu());
  IPSNET_DISPATCH_ALL(dtype, "arange", [&] {
    scalar_t* p = t.data<scalar_t>();
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<scalar_t>(i);
  });
  return device.is_cpu() ? t : t.to(device);
}

template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  IPSNET_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector: ",
               values.size(), " values do not fill shape ", shape_str(shape));
  Tensor t = empty(shape, DTypeOf<T>::value, Device::cpu());
  if (!values.empty()) std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(T));
  return device.is_cpu() ? t : t.to(device);
}
template Tensor Tensor::from_vector<float>(const std::vector<float>&, const Shape&, Device);
template Tensor Tensor::from_vector<double>(const std::vector<double>&, const Shape&, Device);
template Tensor Tensor::from_vector<int64_t>(const std::vector<int64_t>&, const Shape&, Device);

Tensor Tensor::rand(const Shape& shape, Generator& gen, double lo, double hi, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, Device::cpu());
  IPSNET_DISPATCH_FLOAT(dtype, "rand", [&] {
    scalar_t* p = t.data<scalar_t>();
    for (int64_t i = 0, n = t.numel(); i < n; ++i) p[i] = static_cast<scalar_t>(gen.uniform(lo, hi));
  });
  return device.is_cpu() ? t : t.to(device);
}

Tensor Tensor::randn(const Shape& shape, Generator& gen, double mean, double std, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, Device::cpu());
  IPSNET_DISPATCH_FLOAT(dtype, "randn", [&] {
    scalar_t* p = t.data<scalar_t>();
    for (int64_t i = 0, n = t.numel(); i < n; ++i) p[i] = static_cast<scalar_t>(gen.normal(mean, std));
  });
  return device.is_cpu() ? t : t.to(device);
}

// ---- metadata ----------------------------------------------------------------

int64_t Tensor::size(int64_t d) const {
  check_defined(*this, "size", "self");
  return shape()[static_cast<size_t>(wrap_dim(d, dim(), "size"))];
}
int64_t Tensor::stride(int64_t d) const {
  return strides()[static_cast<size_t>(wrap_dim(d, dim(), "stride"))];
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    int64_t sz = shape()[static_cast<size_t>(i)];
    if (sz == 1) continue;
    if (strides()[static_cast<size_t>(i)] != expected) return false;
    expected *= sz;
  }
  return true;
}

double Tensor::item() const {
  IPSNET_CHECK(numel() == 1, "item: expected a one-element tensor, got shape ", shape_str(shape()));
  Tensor c = device().is_cpu() ? *this : to(Device::cpu());
  return IPSNET_DISPATCH_ALL(dtype(), "item", [&]() -> double { return static_cast<double>(*c.data<scalar_t>()); });
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  Tensor c = detach();
  if (!c.device().is_cpu()) c = c.to(Device::cpu());
  if (c.dtype() != DTypeOf<T>::value) c = c.to(DTypeOf<T>::value);
  c = c.contiguous();
  std::vector<T> out(static_cast<size_t>(c.numel()));
  if (!out.empty()) std::memcpy(out.data(), c.raw_data(), out.size() * sizeof(T));
  return out;
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;

// ---- autograd --------------------------------------------------------------------

bool Tensor::requires_grad() const { return impl_ && impl_->autograd_ && impl_->autograd_->requires_grad; }

Tensor& Tensor::set_requires_grad(bool on) {
  check_defined(*this, "set_requires_grad", "self");
  IPSNET_CHECK(!on || is_floating(dtype()), "set_requires_grad: only floating tensors can require grad, got ",
               dtype_name(dtype()));
  if (!impl_->autograd_) impl_->autograd_ = std::make_unique<AutogradMeta>();
  IPSNET_CHECK(!impl_->autograd_->grad_fn, "set_requires_grad: only leaf tensors can change requires_grad");
  impl_->autograd_->requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const {
  return impl_ && impl_->autograd_ ? impl_->autograd_->grad : Tensor();
}

void Tensor::set_grad(const Tensor& g) {
  if (!impl_->autograd_) impl_->autograd_ = std::make_unique<AutogradMeta>();
  impl_->autograd_->grad = g;
}

void Tensor::zero_grad() {
  if (impl_ && impl_->autograd_) impl_->autograd_->grad = Tensor();
}

std::shared_ptr<Node> Tensor::grad_fn() const {
  return impl_ && impl_->autograd_ ? impl_->autograd_->grad_fn : nullptr;
}

bool Tensor::is_leaf() const { return grad_fn() == nullptr; }

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  check_defined(*this, "backward", "self");
  IPSNET_CHECK(requires_grad(), "backward: tensor of shape ", shape_str(shape()),
               " does not require grad (no parameter or input that requires grad led to it)");
  Tensor g = gradient;
  if (!g.defined()) {
    IPSNET_CHECK(numel() == 1, "backward: grad can be implicitly created only for a scalar; this tensor has shape ",
                 shape_str(shape()), " (pass a gradient of that shape)");
    g = Tensor::ones(shape(), dtype(), device());
  } else {
    IPSNET_CHECK(g.shape() == shape(), "backward: gradient shape ", shape_str(g.shape()),
                 " does not match tensor shape ", shape_str(shape()));
  }
  run_backward(*this, g, retain_graph);
}

Tensor Tensor::detach() const {
  check_defined(*this, "detach", "self");
  return Tensor(std::make_shared<TensorImpl>(impl_->storage_, impl_->shape_, impl_->strides_,
                                             impl_->offset_, impl_->dtype_));
}

// ---- views -------------------------------------------------------------------------

namespace {

Tensor make_view(const Tensor& base, Shape shape, Shape strides, int64_t offset) {
  return Tensor(std::make_shared<TensorImpl>(base.storage(), std::move(shape), std::move(strides),
                                             offset, base.dtype()));
}

struct ReshapeBackward : Node {
  Shape in_shape;
  const char* name() const override { return "ReshapeBackward"; }
  std::vector<Tensor> apply(const Tensor& g) override { return {g.reshape(in_shape)}; }
};

struct PermuteBackward : Node {
  std::vector<int64_t> inverse;
  const char* name() const override { return "PermuteBackward"; }
  std::vector<Tensor> apply(const Tensor& g) override { return {g.permute(inverse)}; }
};

struct SliceBackward : Node {
  Shape in_shape;
  DType dtype;
  Device device;
  int64_t dim, start, end, step;
  const char* name() const override { return "SliceBackward"; }
  std::vector<Tensor> apply(const Tensor& g) override {
    Tensor z = Tensor::zeros(in_shape, dtype, device);
    z.slice(dim, start, end, step).copy_(g);
    return {z};
  }
};

struct ExpandBackward : Node {
  Shape in_shape;
  const char* name() const override { return "ExpandBackward"; }
  std::vector<Tensor> apply(const Tensor& g) override { return {ops::sum_to(g, in_shape)}; }
};

struct IdentityBackward : Node {
  const char* name() const override { return "IdentityBackward"; }
  std::vector<Tensor> apply(const Tensor& g) override { return {g}; }
};

struct ToDTypeBackward : Node {
  DType in_dtype;
  const char* name() const override { return "ToDTypeBackward"; }
  std::vector<Tensor> apply(const Tensor& g) override { return {g.to(in_dtype)}; }
};

struct ToDeviceBackward : Node {
  Device in_device;
  const char* name() const override { return "ToDeviceBackward"; }
  std::vector<Tensor> apply(const Tensor& g) override { return {g.to(in_device)}; }
};

// Strides for viewing (shape, strides) as new_shape without a copy (PyTorch's
// chunk rule: old dims that are mutually contiguous form chunks; each chunk must
// be covered exactly by a run of new dims). False when a copy is needed.
bool view_strides(const Shape& shape, const Shape& strides, const Shape& new_shape, Shape* out) {
  out->assign(new_shape.size(), 0);
  if (shape_numel(shape) == 0 || shape.empty()) {
    *out = contiguous_strides(new_shape);
    return true;
  }
  int64_t view_d = static_cast<int64_t>(new_shape.size()) - 1;
  int64_t chunk_base_stride = strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t td = static_cast<int64_t>(shape.size()) - 1; td >= 0; --td) {
    tensor_numel *= shape[static_cast<size_t>(td)];
    if (td == 0 || (shape[static_cast<size_t>(td - 1)] != 1 &&
                    strides[static_cast<size_t>(td - 1)] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || new_shape[static_cast<size_t>(view_d)] == 1)) {
        (*out)[static_cast<size_t>(view_d)] = view_numel * chunk_base_stride;
        view_numel *= new_shape[static_cast<size_t>(view_d)];
        --view_d;
      }
      if (view_numel != tensor_numel) return false;
      if (td > 0) {
        chunk_base_stride = strides[static_cast<size_t>(td - 1)];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  return view_d == -1;
}

Shape infer_shape(const Shape& req, int64_t numel, const char* op, const Shape& from) {
  Shape s = req;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      IPSNET_CHECK(infer < 0, op, ": only one dimension can be -1 in ", shape_str(req));
      infer = static_cast<int64_t>(i);
    } else {
      IPSNET_CHECK(s[i] >= 0, op, ": invalid size ", s[i], " in ", shape_str(req));
      known *= s[i];
    }
  }
  if (infer >= 0) {
    IPSNET_CHECK(known != 0 && numel % known == 0, op, ": cannot reshape ", shape_str(from), " into ",
                 shape_str(req));
    s[static_cast<size_t>(infer)] = numel / known;
  }
  IPSNET_CHECK(shape_numel(s) == numel, op, ": cannot reshape ", shape_str(from), " (", numel,
               " elements) into ", shape_str(req));
  return s;
}

void record(Tensor& out, const std::shared_ptr<Node>& node, const Tensor& in) {
  set_history(out, node, {in});
}

}  // namespace

Tensor Tensor::view(const Shape& shape_req) const {
  check_defined(*this, "view", "self");
  Shape s = infer_shape(shape_req, numel(), "view", shape());
  Shape st;
  IPSNET_CHECK(view_strides(shape(), strides(), s, &st), "view: shape ", shape_str(shape()),
               " with strides ", shape_str(strides()), " cannot be viewed as ", shape_str(s),
               " (use reshape)");
  Tensor out = make_view(*this, s, st, offset());
  if (any_requires_grad({this})) {
    auto n = std::make_shared<ReshapeBackward>();
    n->in_shape = shape();
    record(out, n, *this);
  }
  return out;
}

Tensor Tensor::reshape(const Shape& shape_req) const {
  check_defined(*this, "reshape", "self");
  Shape s = infer_shape(shape_req, numel(), "reshape", shape());
  Shape st;
  if (view_strides(shape(), strides(), s, &st)) return view(s);
  return contiguous().view(s);
}

Tensor Tensor::flatten(int64_t start, int64_t end) const {
  if (dim() == 0) return reshape({1});
  start = wrap_dim(start, dim(), "flatten");
  end = wrap_dim(end, dim(), "flatten");
  Shape s;
  for (int64_t i = 0; i < start; ++i) s.push_back(shape()[static_cast<size_t>(i)]);
  int64_t p = 1;
  for (int64_t i = start; i <= end; ++i) p *= shape()[static_cast<size_t>(i)];
  s.push_back(p);
  for (int64_t i = end + 1; i < dim(); ++i) s.push_back(shape()[static_cast<size_t>(i)]);
  return reshape(s);
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  check_defined(*this, "permute", "self");
  IPSNET_CHECK(static_cast<int64_t>(dims.size()) == dim(), "permute: ", dims.size(),
               " dims given for a tensor of shape ", shape_str(shape()));
  Shape s(dims.size()), st(dims.size());
  std::vector<int64_t> inv(dims.size(), -1);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = wrap_dim(dims[i], dim(), "permute");
    IPSNET_CHECK(inv[static_cast<size_t>(d)] < 0, "permute: dim ", d, " repeated");
    inv[static_cast<size_t>(d)] = static_cast<int64_t>(i);
    s[i] = shape()[static_cast<size_t>(d)];
    st[i] = strides()[static_cast<size_t>(d)];
  }
  Tensor out = make_view(*this, s, st, offset());
  if (any_requires_grad({this})) {
    auto n = std::make_shared<PermuteBackward>();
    n->inverse = inv;
    record(out, n, *this);
  }
  return out;
}

Tensor Tensor::transpose(int64_t a, int64_t b) const {
  std::vector<int64_t> p(static_cast<size_t>(dim()));
  std::iota(p.begin(), p.end(), int64_t(0));
  std::swap(p[static_cast<size_t>(wrap_dim(a, dim(), "transpose"))], p[static_cast<size_t>(wrap_dim(b, dim(), "transpose"))]);
  return permute(p);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  check_defined(*this, "slice", "self");
  d = wrap_dim(d, dim(), "slice");
  int64_t n = shape()[static_cast<size_t>(d)];
  IPSNET_CHECK(step >= 1, "slice: step must be >= 1, got ", step);
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::min(std::max<int64_t>(start, 0), n);
  end = std::min(std::max<int64_t>(end, start), n);
  Shape s = shape(), st = strides();
  s[static_cast<size_t>(d)] = (end - start + step - 1) / step;
  st[static_cast<size_t>(d)] *= step;
  Tensor out = make_view(*this, s, st, offset() + start * strides()[static_cast<size_t>(d)]);
  if (any_requires_grad({this})) {
    auto node = std::make_shared<SliceBackward>();
    node->in_shape = shape();
    node->dtype = dtype();
    node->device = device();
    node->dim = d;
    node->start = start;
    node->end = end;
    node->step = step;
    record(out, node, *this);
  }
  return out;
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, dim(), "select");
  int64_t n = shape()[static_cast<size_t>(d)];
  IPSNET_CHECK(index >= -n && index < n, "select: index ", index, " out of range for dim ", d,
               " of size ", n);
  if (index < 0) index += n;
  return slice(d, index, index + 1).squeeze(d);
}

Tensor Tensor::expand(const Shape& target) const {
  check_defined(*this, "expand", "self");
  IPSNET_CHECK(static_cast<int64_t>(target.size()) >= dim(), "expand: cannot expand ", shape_str(shape()),
               " to fewer dims ", shape_str(target));
  size_t lead = target.size() - shape().size();
  Shape s(target.size()), st(target.size());
  for (size_t i = 0; i < target.size(); ++i) {
    if (i < lead) {
      IPSNET_CHECK(target[i] >= 0, "expand: invalid size ", target[i], " in ", shape_str(target));
      s[i] = target[i];
      st[i] = 0;
      continue;
    }
    int64_t have = shape()[i - lead];
    int64_t want = target[i] == -1 ? have : target[i];
    IPSNET_CHECK(have == want || have == 1, "expand: shape ", shape_str(shape()), " cannot be expanded to ",
                 shape_str(target), " (dim ", i, ": ", have, " vs ", want, ")");
    s[i] = want;
    st[i] = have == want ? strides()[i - lead] : 0;
  }
  if (s == shape()) return *this;
  Tensor out = make_view(*this, s, st, offset());
  if (any_requires_grad({this})) {
    auto node = std::make_shared<ExpandBackward>();
    node->in_shape = shape();
    record(out, node, *this);
  }
  return out;
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape s = shape();
  s.insert(s.begin() + d, 1);
  return view(s);
}

Tensor Tensor::squeeze(int64_t d) const {
  d = wrap_dim(d, dim(), "squeeze");
  if (shape()[static_cast<size_t>(d)] != 1) return *this;
  Shape s = shape();
  s.erase(s.begin() + d);
  return view(s);
}

// ---- copies --------------------------------------------------------------------------

Tensor Tensor::contiguous() const {
  check_defined(*this, "contiguous", "self");
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  check_defined(*this, "clone", "self");
  Tensor out = empty(shape(), dtype(), device());
  backend_for(device()).copy(*this, out);
  if (any_requires_grad({this})) record(out, std::make_shared<IdentityBackward>(), *this);
  return out;
}

Tensor Tensor::to(Device d) const {
  check_defined(*this, "to", "self");
  if (d == device()) return *this;
  Tensor src = contiguous();
  Tensor out = empty(shape(), dtype(), d);
  Backend& be = backend_for(d.is_cuda() ? d : device());
  be.copy_across(src, out);
  if (any_requires_grad({this})) {
    auto n = std::make_shared<ToDeviceBackward>();
    n->in_device = device();
    record(out, n, *this);
  }
  return out;
}

Tensor Tensor::to(DType t) const {
  check_defined(*this, "to", "self");
  if (t == dtype()) return *this;
  Tensor out = empty(shape(), t, device());
  backend_for(device()).copy(*this, out);
  if (is_floating(t) && is_floating(dtype()) && any_requires_grad({this})) {
    auto n = std::make_shared<ToDTypeBackward>();
    n->in_dtype = dtype();
    record(out, n, *this);
  }
  return out;
}

Tensor& Tensor::fill_(double value) {
  check_defined(*this, "fill_", "self");
  IPSNET_CHECK(!(grad_enabled() && requires_grad()),
               "fill_: in-place change of a tensor that requires grad (use a NoGradGuard)");
  backend_for(device()).fill(*this, value);
  storage()->bump_version();
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  check_defined(*this, "copy_", "self");
  check_defined(src, "copy_", "src");
  IPSNET_CHECK(!(grad_enabled() && requires_grad()),
               "copy_: in-place change of a tensor that requires grad (use a NoGradGuard)");
  Tensor s = src.detach();
  if (s.device() != device()) s = s.contiguous().to(device());
  s = s.expand(shape());
  backend_for(device()).copy(s, *this);
  storage()->bump_version();
  return *this;
}

// ---- printing -------------------------------------------------------------------------

std::string Tensor::to_string(int64_t max_elems) const {
  if (!defined()) return "Tensor(undefined)";
  std::ostringstream os;
  os << "Tensor(" << dtype_name(dtype()) << ", " << device().str() << ", shape " << shape_str(shape());
  if (requires_grad()) os << ", requires_grad";
  os << ")\n[";
  std::vector<double> v = detach().to(DType::Float64).to_vector<double>();
  int64_t n = std::min<int64_t>(static_cast<int64_t>(v.size()), max_elems);
  int64_t row = dim() > 0 ? size(-1) : 1;
  for (int64_t i = 0; i < n; ++i) {
    if (i && row > 0 && i % row == 0) os << "\n ";
    os << std::setprecision(6) << v[static_cast<size_t>(i)] << (i + 1 < static_cast<int64_t>(v.size()) ? " " : "");
  }
  if (n < static_cast<int64_t>(v.size())) os << "... (" << v.size() << " elements)";
  os << "]";
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.to_string(); }

}  // namespace ipsnet

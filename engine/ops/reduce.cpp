// Reductions: sum, mean, max/min (with indices), argmax, sum_to.
#include <algorithm>

#include "engine/autograd/grad_mode.h"
#include "engine/autograd/node.h"
#include "engine/ops/ops.h"

namespace ipsnet {
namespace ops {

namespace {

std::vector<int64_t> normalize_dims(std::vector<int64_t> dims, int64_t ndim, const char* op) {
  for (auto& d : dims) d = wrap_dim(d, ndim, op);
  std::sort(dims.begin(), dims.end());
  IPSNET_CHECK(std::adjacent_find(dims.begin(), dims.end()) == dims.end(), op, ": repeated dim");
  return dims;
}

Shape keep_shape(const Shape& s, const std::vector<int64_t>& dims) {
  Shape k = s;
  for (int64_t d : dims) k[static_cast<size_t>(d)] = 1;
  return k;
}

Shape drop_shape(const Shape& s, const std::vector<int64_t>& dims) {
  Shape k;
  for (size_t i = 0; i < s.size(); ++i)
    if (!std::binary_search(dims.begin(), dims.end(), static_cast<int64_t>(i))) k.push_back(s[i]);
  return k;
}

// Reduces x (any layout) over a sorted, contiguous range of dims; out has keepdim shape.
Tensor reduce_range(ReduceOp op, const Tensor& x, int64_t d0, int64_t d1, Tensor* argidx) {
  Tensor xc = x.detach().contiguous();
  int64_t outer = 1, n = 1, inner = 1;
  for (int64_t i = 0; i < x.dim(); ++i) {
    int64_t s = x.shape()[static_cast<size_t>(i)];
    if (i < d0) outer *= s;
    else if (i <= d1) n *= s;
    else inner *= s;
  }
  Shape ks = x.shape();
  for (int64_t i = d0; i <= d1; ++i) ks[static_cast<size_t>(i)] = 1;
  Tensor out = Tensor::empty(ks, x.dtype(), x.device());
  Tensor idx;
  if (argidx) idx = Tensor::empty(ks, DType::Int64, x.device());
  IPSNET_CHECK(n > 0 || (op != ReduceOp::Max && op != ReduceOp::Min),
               "max/min: cannot reduce an empty dimension of ", shape_str(x.shape()));
  if (n == 0) {
    backend_for(x.device()).fill(out, 0.0);
  } else {
    backend_for(x.device()).reduce(op, xc, outer, n, inner, out, idx);
  }
  if (argidx) *argidx = idx;
  return out;
}

struct SumBackward : Node {
  Shape in_shape, keep;
  double scale = 1.0;
  const char* name() const override { return "SumBackward"; }
  std::vector<Tensor> apply(const Tensor& g) override {
    Tensor gg = g.reshape(keep);
    if (scale != 1.0) gg = mul(gg, scale);
    return {gg.expand(in_shape)};
  }
};

Tensor sum_impl(const Tensor& x, std::vector<int64_t> dims, bool keepdim, bool mean_) {
  const char* op = mean_ ? "mean" : "sum";
  check_defined(x, op, "x");
  dims = normalize_dims(dims, x.dim(), op);
  if (x.dim() == 0) dims.clear();
  Shape keep = keep_shape(x.shape(), dims);
  int64_t count = 1;
  for (int64_t d : dims) count *= x.shape()[static_cast<size_t>(d)];
  // Reduce maximal runs of consecutive dims, the innermost run first.
  Tensor cur = x.detach();
  size_t i = dims.size();
  while (i > 0) {
    size_t j = i - 1;
    while (j > 0 && dims[j - 1] == dims[j] - 1) --j;
    cur = reduce_range(ReduceOp::Sum, cur, dims[j], dims[i - 1], nullptr);
    i = j;
  }
  if (dims.empty()) cur = cur.clone();
  if (mean_ && count != 1) {
    IPSNET_CHECK(is_floating(x.dtype()), "mean: expected a floating tensor, got ", dtype_name(x.dtype()));
    backend_for(x.device()).unary(math::UnaryOp::MulScalar, cur, cur, 1.0 / static_cast<double>(count));
  }
  Tensor out = keepdim ? cur.reshape(keep) : cur.reshape(drop_shape(x.shape(), dims));
  out = out.detach();
  if (any_requires_grad({&x})) {
    auto n = std::make_shared<SumBackward>();
    n->in_shape = x.shape();
    n->keep = keep;
    n->scale = mean_ ? 1.0 / static_cast<double>(count) : 1.0;
    set_history(out, n, {x});
  }
  return out;
}

std::vector<int64_t> all_dims(const Tensor& x) {
  std::vector<int64_t> d(static_cast<size_t>(x.dim()));
  for (int64_t i = 0; i < x.dim(); ++i) d[static_cast<size_t>(i)] = i;
  return d;
}

struct MaxBackward : Node {
  Shape in_shape, keep;
  int64_t dim;
  SavedTensor idx;
  const char* name() const override { return "MaxBackward"; }
  std::vector<Tensor> apply(const Tensor& g) override {
    Tensor z = Tensor::zeros(in_shape, g.dtype(), g.device());
    return {scatter_add(z, dim, idx.unpack(name()), g.reshape(keep))};
  }
  void release() override { idx.reset(); }
};

std::pair<Tensor, Tensor> extreme(const Tensor& x, int64_t dim, bool keepdim, bool is_max) {
  const char* op = is_max ? "max" : "min";
  check_defined(x, op, "x");
  IPSNET_CHECK(x.dim() > 0, op, ": expected at least one dim, got a scalar");
  dim = wrap_dim(dim, x.dim(), op);
  Tensor idx;
  Tensor vals = reduce_range(is_max ? ReduceOp::Max : ReduceOp::Min, x, dim, dim, &idx);
  Shape keep = vals.shape();
  if (!keepdim) {
    vals = vals.squeeze(dim);
    idx = idx.squeeze(dim);
  }
  if (any_requires_grad({&x})) {
    auto n = std::make_shared<MaxBackward>();
    n->in_shape = x.shape();
    n->keep = keep;
    n->dim = dim;
    n->idx = SavedTensor(idx.reshape(keep));
    set_history(vals, n, {x});
  }
  return {vals, idx};
}

}  // namespace

Tensor sum(const Tensor& x) { return sum_impl(x, all_dims(x), false, false); }
Tensor sum(const Tensor& x, std::vector<int64_t> dims, bool keepdim) { return sum_impl(x, dims, keepdim, false); }
Tensor mean(const Tensor& x) { return sum_impl(x, all_dims(x), false, true); }
Tensor mean(const Tensor& x, std::vector<int64_t> dims, bool keepdim) { return sum_impl(x, dims, keepdim, true); }

std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim) { return extreme(x, dim, keepdim, true); }
std::pair<Tensor, Tensor> min(const Tensor& x, int64_t dim, bool keepdim) { return extreme(x, dim, keepdim, false); }

Tensor amax(const Tensor& x, std::vector<int64_t> dims, bool keepdim) {
  check_defined(x, "amax", "x");
  dims = normalize_dims(dims, x.dim(), "amax");
  Tensor cur = x;
  for (auto it = dims.rbegin(); it != dims.rend(); ++it) cur = max(cur, *it, true).first;
  return keepdim ? cur : cur.reshape(drop_shape(x.shape(), dims));
}

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  NoGradGuard ng;
  return max(x, dim, keepdim).second;
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  IPSNET_CHECK(static_cast<int64_t>(shape.size()) <= x.dim(), "sum_to: cannot reduce ",
               shape_str(x.shape()), " to ", shape_str(shape));
  size_t lead = x.shape().size() - shape.size();
  std::vector<int64_t> dims;
  for (size_t i = 0; i < x.shape().size(); ++i) {
    if (i < lead) {
      dims.push_back(static_cast<int64_t>(i));
    } else if (shape[i - lead] == 1 && x.shape()[i] != 1) {
      dims.push_back(static_cast<int64_t>(i));
    } else {
      IPSNET_CHECK(shape[i - lead] == x.shape()[i], "sum_to: cannot reduce ", shape_str(x.shape()),
                   " to ", shape_str(shape));
    }
  }
  return sum(x, dims, true).reshape(shape);
}

}  // namespace ops
}  // namespace ipsnet

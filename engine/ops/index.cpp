// cat, stack, gather, scatter_add, index_select, topk.
#include "engine/autograd/node.h"
#include "engine/ops/ops.h"

namespace ipsnet {
namespace ops {

namespace {

struct CatBackward : Node {
  int64_t dim;
  std::vector<int64_t> sizes;
  const char* name() const override { return "CatBackward"; }
  std::vector<Tensor> apply(const Tensor& g) override {
    std::vector<Tensor> out;
    int64_t off = 0;
    for (int64_t s : sizes) {
      out.push_back(g.slice(dim, off, off + s));
      off += s;
    }
    return out;
  }
};

void check_index_shape(const Tensor& x, int64_t dim, const Tensor& index, const char* op) {
  check_defined(index, op, "index");
  IPSNET_CHECK(index.dtype() == DType::Int64, op, ": index must be int64, got ", dtype_name(index.dtype()));
  IPSNET_CHECK(index.device() == x.device(), op, ": index on ", index.device().str(), ", input on ",
               x.device().str());
  IPSNET_CHECK(index.dim() == x.dim(), op, ": index ", shape_str(index.shape()), " vs input ",
               shape_str(x.shape()), ": expected the same number of dims");
  for (int64_t d = 0; d < x.dim(); ++d)
    IPSNET_CHECK(d == dim || index.size(d) == x.size(d), op, ": index ", shape_str(index.shape()),
                 " vs input ", shape_str(x.shape()), ": sizes must match except along dim ", dim,
                 " (expand the index)");
}

struct GatherBackward : Node {
  int64_t dim;
  Shape in_shape;
  SavedTensor index;
  const char* name() const override { return "GatherBackward"; }
  std::vector<Tensor> apply(const Tensor& g) override {
    Tensor z = Tensor::zeros(in_shape, g.dtype(), g.device());
    return {scatter_add(z, dim, index.unpack(name()), g)};
  }
  void release() override { index.reset(); }
};

struct ScatterAddBackward : Node {
  int64_t dim;
  SavedTensor index;
  const char* name() const override { return "ScatterAddBackward"; }
  std::vector<Tensor> apply(const Tensor& g) override {
    return {g, gather(g, dim, index.unpack(name()))};
  }
  void release() override { index.reset(); }
};

struct IndexSelectBackward : Node {
  int64_t dim;
  Shape in_shape;
  SavedTensor index;
  const char* name() const override { return "IndexSelectBackward"; }
  std::vector<Tensor> apply(const Tensor& g) override {
    Tensor idx = index.unpack(name());
    Tensor gc = g.contiguous();
    Tensor z = Tensor::zeros(in_shape, g.dtype(), g.device());
    int64_t outer, n, inner;
    dim_split(in_shape, dim, &outer, &n, &inner);
    backend_for(g.device()).index_add(gc, idx, z, outer, n, idx.numel(), inner);
    return {z};
  }
  void release() override { index.reset(); }
};

}  // namespace

Tensor cat(const std::vector<Tensor>& xs, int64_t dim) {
  IPSNET_CHECK(!xs.empty(), "cat: expected at least one tensor");
  const Tensor& f = xs[0];
  check_defined(f, "cat", "tensors[0]");
  dim = wrap_dim(dim, f.dim(), "cat");
  Shape os = f.shape();
  int64_t total = 0;
  std::vector<int64_t> sizes;
  for (size_t i = 0; i < xs.size(); ++i) {
    check_same(f, xs[i], "cat");
    IPSNET_CHECK(xs[i].dim() == f.dim(), "cat: tensor ", i, " has shape ", shape_str(xs[i].shape()),
                 ", tensor 0 has ", shape_str(f.shape()), ": dims differ");
    for (int64_t d = 0; d < f.dim(); ++d)
      IPSNET_CHECK(d == dim || xs[i].size(d) == f.size(d), "cat: tensor ", i, " has shape ",
                   shape_str(xs[i].shape()), ", tensor 0 has ", shape_str(f.shape()),
                   ": sizes must match except along dim ", dim);
    sizes.push_back(xs[i].size(dim));
    total += xs[i].size(dim);
  }
  os[static_cast<size_t>(dim)] = total;
  Tensor out = Tensor::empty(os, f.dtype(), f.device());
  int64_t off = 0;
  Backend& be = backend_for(f.device());
  for (size_t i = 0; i < xs.size(); ++i) {
    if (sizes[i]) be.copy(xs[i].detach(), out.slice(dim, off, off + sizes[i]));
    off += sizes[i];
  }
  if (any_requires_grad(xs)) {
    auto n = std::make_shared<CatBackward>();
    n->dim = dim;
    n->sizes = sizes;
    set_history(out, n, xs);
  }
  return out;
}

Tensor stack(const std::vector<Tensor>& xs, int64_t dim) {
  IPSNET_CHECK(!xs.empty(), "stack: expected at least one tensor");
  std::vector<Tensor> u;
  dim = wrap_dim(dim, xs[0].dim() + 1, "stack");
  for (const auto& x : xs) u.push_back(x.unsqueeze(dim));
  return cat(u, dim);
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  check_defined(x, "gather", "x");
  dim = wrap_dim(dim, x.dim(), "gather");
  check_index_shape(x, dim, index, "gather");
  Tensor xc = x.detach().contiguous(), ic = index.contiguous();
  Tensor out = Tensor::empty(index.shape(), x.dtype(), x.device());
  int64_t outer, n, inner;
  dim_split(x.shape(), dim, &outer, &n, &inner);
  backend_for(x.device()).gather(xc, ic, out, outer, n, index.size(dim), inner);
  if (any_requires_grad({&x})) {
    auto node = std::make_shared<GatherBackward>();
    node->dim = dim;
    node->in_shape = x.shape();
    node->index = SavedTensor(ic);
    set_history(out, node, {x});
  }
  return out;
}

Tensor scatter_add(const Tensor& self, int64_t dim, const Tensor& index, const Tensor& src) {
  check_same(self, src, "scatter_add");
  dim = wrap_dim(dim, self.dim(), "scatter_add");
  check_index_shape(self, dim, index, "scatter_add");
  IPSNET_CHECK(src.shape() == index.shape(), "scatter_add: src ", shape_str(src.shape()), " vs index ",
               shape_str(index.shape()), ": shapes must match");
  Tensor out = self.detach().clone();
  Tensor ic = index.contiguous(), sc = src.detach().contiguous();
  int64_t outer, n, inner;
  dim_split(self.shape(), dim, &outer, &n, &inner);
  backend_for(self.device()).scatter_add(sc, ic, out, outer, n, index.size(dim), inner);
  if (any_requires_grad({&self, &src})) {
    auto node = std::make_shared<ScatterAddBackward>();
    node->dim = dim;
    node->index = SavedTensor(ic);
    set_history(out, node, {self, src});
  }
  return out;
}

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  check_defined(x, "index_select", "x");
  check_defined(index, "index_select", "index");
  dim = wrap_dim(dim, x.dim(), "index_select");
  IPSNET_CHECK(index.dtype() == DType::Int64 && index.dim() == 1, "index_select: index must be 1-D int64, got ",
               dtype_name(index.dtype()), " ", shape_str(index.shape()));
  Tensor xc = x.detach().contiguous(), ic = index.contiguous();
  Shape os = x.shape();
  os[static_cast<size_t>(dim)] = index.size(0);
  Tensor out = Tensor::empty(os, x.dtype(), x.device());
  int64_t outer, n, inner;
  dim_split(x.shape(), dim, &outer, &n, &inner);
  backend_for(x.device()).index_select(xc, ic, out, outer, n, index.size(0), inner);
  if (any_requires_grad({&x})) {
    auto node = std::make_shared<IndexSelectBackward>();
    node->dim = dim;
    node->in_shape = x.shape();
    node->index = SavedTensor(ic);
    set_history(out, node, {x});
  }
  return out;
}

std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k, int64_t dim, bool largest) {
  check_defined(x, "topk", "x");
  IPSNET_CHECK(x.dim() >= 1, "topk: expected at least one dim, got a scalar");
  dim = wrap_dim(dim, x.dim(), "topk");
  int64_t n = x.size(dim);
  IPSNET_CHECK(k >= 0 && k <= n, "topk: k = ", k, " out of range for dim ", dim, " of size ", n,
               " (shape ", shape_str(x.shape()), ")");
  Tensor xt = x.detach().transpose(dim, -1).contiguous();
  int64_t rows = n ? xt.numel() / n : 0;
  Shape vs = xt.shape();
  vs.back() = k;
  Tensor vals = Tensor::empty(vs, x.dtype(), x.device());
  Tensor idx = Tensor::empty(vs, DType::Int64, x.device());
  if (rows > 0 && k > 0) backend_for(x.device()).topk(xt, vals, idx, rows, n, k, largest);
  vals = vals.transpose(dim, -1);
  idx = idx.transpose(dim, -1).contiguous();
  if (any_requires_grad({&x})) {
    vals = gather(x, dim, idx);  // differentiable path: same values, gradient via scatter
  } else {
    vals = vals.contiguous();
  }
  return {vals, idx};
}

}  // namespace ops
}  // namespace ipsnet

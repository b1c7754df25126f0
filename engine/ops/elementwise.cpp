// Elementwise ops: unary (with paired backend backward), broadcasting binary
// (backward composed of forward ops, reduced to each input's shape).
#include <cmath>

#include "engine/autograd/grad_mode.h"
#include "engine/autograd/node.h"
#include "engine/ops/ops.h"

namespace ipsnet {
namespace ops {

using math::BinaryOp;
using math::UnaryOp;

void check_same(const Tensor& a, const Tensor& b, const char* op) {
  check_defined(a, op, "a");
  check_defined(b, op, "b");
  IPSNET_CHECK(a.device() == b.device(), op, ": tensors on different devices: ", a.device().str(),
               " and ", b.device().str());
  IPSNET_CHECK(a.dtype() == b.dtype(), op, ": dtype mismatch: ", dtype_name(a.dtype()), " ",
               shape_str(a.shape()), " vs ", dtype_name(b.dtype()), " ", shape_str(b.shape()));
}

void dim_split(const Shape& s, int64_t dim, int64_t* outer, int64_t* n, int64_t* inner) {
  *outer = 1;
  *inner = 1;
  for (int64_t i = 0; i < dim; ++i) *outer *= s[static_cast<size_t>(i)];
  *n = s.empty() ? 1 : s[static_cast<size_t>(dim)];
  for (size_t i = static_cast<size_t>(dim) + 1; i < s.size(); ++i) *inner *= s[i];
}

namespace {

const char* unary_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::Relu: return "relu";
    case UnaryOp::Sigmoid: return "sigmoid";
    case UnaryOp::Tanh: return "tanh";
    case UnaryOp::Exp: return "exp";
    case UnaryOp::Log: return "log";
    case UnaryOp::Sqrt: return "sqrt";
    case UnaryOp::Neg: return "neg";
    case UnaryOp::Abs: return "abs";
    case UnaryOp::AddScalar: return "add_scalar";
    case UnaryOp::MulScalar: return "mul_scalar";
    case UnaryOp::PowScalar: return "pow";
    case UnaryOp::Square: return "square";
    case UnaryOp::RSubScalar: return "rsub";
    case UnaryOp::Reciprocal: return "reciprocal";
    case UnaryOp::ClampMin: return "clamp_min";
  }
  return "unary";
}

struct UnaryBackward : Node {
  UnaryOp op;
  double alpha;
  SavedTensor saved;  // x or y, as the op's backward needs
  bool uses_output;
  const char* name() const override { return "UnaryBackward"; }
  std::vector<Tensor> apply(const Tensor& g) override {
    Tensor s = saved.unpack(unary_name(op));
    Tensor gc = g.contiguous();
    Tensor dx = Tensor::empty(gc.shape(), gc.dtype(), gc.device());
    backend_for(gc.device())
        .unary_backward(op, uses_output ? Tensor() : s, uses_output ? s : Tensor(), gc, dx, alpha);
    return {dx};
  }
  void release() override { saved.reset(); }
};

Tensor unary(UnaryOp op, const Tensor& x, double alpha = 0.0) {
  const char* name = unary_name(op);
  check_defined(x, name, "x");
  IPSNET_CHECK(is_floating(x.dtype()), name, ": expected a floating tensor, got ", dtype_name(x.dtype()));
  Tensor xc = x.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  backend_for(x.device()).unary(op, xc.detach(), y, alpha);
  if (any_requires_grad({&x})) {
    auto n = std::make_shared<UnaryBackward>();
    n->op = op;
    n->alpha = alpha;
    n->uses_output = math::unary_backward_uses_output(op);
    // Ops whose derivative is a constant need nothing saved.
    bool needs_nothing = op == UnaryOp::Neg || op == UnaryOp::AddScalar || op == UnaryOp::MulScalar ||
                         op == UnaryOp::RSubScalar;
    // ReLU's backward reads only the sign of its output: under precision: bf16
    // it is kept in bfloat16 (shared with the next convolution, which keeps
    // the same tensor in bfloat16 for its weight gradient). Rounding keeps
    // every sign and zero; only outputs in (0, 2^-134] (float32 subnormals)
    // round to zero and lose their gradient.
    const bool bf16_mask = op == UnaryOp::Relu && precision_bf16_enabled() &&
                           backend_for(x.device()).supports_bf16_conv();
    if (!needs_nothing)
      n->saved = n->uses_output ? (bf16_mask ? SavedTensor::bf16(y) : SavedTensor(y)) : SavedTensor(xc);
    set_history(y, n, {x});
  }
  return y;
}

const char* binary_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::Add: return "add";
    case BinaryOp::Sub: return "sub";
    case BinaryOp::Mul: return "mul";
    case BinaryOp::Div: return "div";
    case BinaryOp::Maximum: return "maximum";
    case BinaryOp::Minimum: return "minimum";
    case BinaryOp::BceWithLogits: return "binary_cross_entropy_with_logits";
    case BinaryOp::Gt: return "gt";
    case BinaryOp::Lt: return "lt";
    case BinaryOp::Ge: return "ge";
    case BinaryOp::Le: return "le";
    case BinaryOp::Eq: return "eq";
    case BinaryOp::Ne: return "ne";
  }
  return "binary";
}

Tensor binary_forward(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = binary_name(op);
  check_same(a, b, name);
  Shape s = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = Tensor::empty(s, a.dtype(), a.device());
  backend_for(a.device()).binary(op, a.detach().expand(s), b.detach().expand(s), out);
  return out;
}

struct BinaryBackward : Node {
  BinaryOp op;
  SavedTensor a, b, out;
  Shape a_shape, b_shape;
  bool need_a = true, need_b = true;
  const char* name() const override { return "BinaryBackward"; }
  std::vector<Tensor> apply(const Tensor& g) override {
    Tensor da, db;
    const char* nm = binary_name(op);
    switch (op) {
      case BinaryOp::Add:
        da = g;
        db = g;
        break;
      case BinaryOp::Sub:
        da = g;
        if (need_b) db = neg(g);
        break;
      case BinaryOp::Mul:
        if (need_a) da = mul(g, b.unpack(nm));
        if (need_b) db = mul(g, a.unpack(nm));
        break;
      case BinaryOp::Div: {
        Tensor bb = b.unpack(nm);
        if (need_a) da = div(g, bb);
        if (need_b) db = neg(div(mul(g, out.unpack(nm)), bb));
        break;
      }
      case BinaryOp::Maximum:
      case BinaryOp::Minimum: {
        // Ties send the gradient to a (matches the forward's choice of a).
        Tensor aa = a.unpack(nm), bb = b.unpack(nm);
        Tensor pick_a = op == BinaryOp::Maximum ? ge(aa, bb) : le(aa, bb);
        if (need_a) da = mul(g, pick_a);
        if (need_b) db = mul(g, rsub(pick_a, 1.0));
        break;
      }
      case BinaryOp::BceWithLogits: {
        Tensor x = a.unpack(nm), z = b.unpack(nm);
        if (need_a) da = mul(g, sub(sigmoid(x), z));
        if (need_b) db = mul(g, neg(x));
        break;
      }
      default:
        break;
    }
    if (da.defined() && da.shape() != a_shape) da = sum_to(da, a_shape);
    if (db.defined() && db.shape() != b_shape) db = sum_to(db, b_shape);
    return {need_a ? da : Tensor(), need_b ? db : Tensor()};
  }
  void release() override {
    a.reset();
    b.reset();
    out.reset();
  }
};

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(op, a, b);
  if (any_requires_grad({&a, &b})) {
    IPSNET_CHECK(op != BinaryOp::Gt && op != BinaryOp::Lt && op != BinaryOp::Ge && op != BinaryOp::Le &&
                     op != BinaryOp::Eq && op != BinaryOp::Ne,
                 "internal: comparison recorded for autograd");
    auto n = std::make_shared<BinaryBackward>();
    n->op = op;
    n->a_shape = a.shape();
    n->b_shape = b.shape();
    n->need_a = a.requires_grad();
    n->need_b = b.requires_grad();
    switch (op) {
      case BinaryOp::Mul:
        if (n->need_a) n->b = SavedTensor(b);
        if (n->need_b) n->a = SavedTensor(a);
        break;
      case BinaryOp::Div:
        n->b = SavedTensor(b);
        if (n->need_b) n->out = SavedTensor(out);
        break;
      case BinaryOp::Maximum:
      case BinaryOp::Minimum:
      case BinaryOp::BceWithLogits:
        n->a = SavedTensor(a);
        n->b = SavedTensor(b);
        break;
      default:
        break;
    }
    set_history(out, n, {a, b});
  }
  return out;
}

Tensor compare(BinaryOp op, const Tensor& a, const Tensor& b) { return binary_forward(op, a, b); }

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Div, a, b); }
Tensor maximum(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Maximum, a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Minimum, a, b); }
Tensor gt(const Tensor& a, const Tensor& b) { return compare(BinaryOp::Gt, a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return compare(BinaryOp::Lt, a, b); }
Tensor ge(const Tensor& a, const Tensor& b) { return compare(BinaryOp::Ge, a, b); }
Tensor le(const Tensor& a, const Tensor& b) { return compare(BinaryOp::Le, a, b); }
Tensor eq(const Tensor& a, const Tensor& b) { return compare(BinaryOp::Eq, a, b); }
Tensor ne(const Tensor& a, const Tensor& b) { return compare(BinaryOp::Ne, a, b); }

Tensor add(const Tensor& a, double s) { return unary(UnaryOp::AddScalar, a, s); }
Tensor mul(const Tensor& a, double s) { return unary(UnaryOp::MulScalar, a, s); }
Tensor rsub(const Tensor& a, double s) { return unary(UnaryOp::RSubScalar, a, s); }
Tensor pow(const Tensor& a, double e) { return unary(UnaryOp::PowScalar, a, e); }
Tensor neg(const Tensor& x) { return unary(UnaryOp::Neg, x); }
Tensor square(const Tensor& x) { return unary(UnaryOp::Square, x); }
Tensor reciprocal(const Tensor& x) { return unary(UnaryOp::Reciprocal, x); }
Tensor relu(const Tensor& x) { return unary(UnaryOp::Relu, x); }
Tensor sigmoid(const Tensor& x) { return unary(UnaryOp::Sigmoid, x); }
Tensor tanh(const Tensor& x) { return unary(UnaryOp::Tanh, x); }
Tensor exp(const Tensor& x) { return unary(UnaryOp::Exp, x); }
Tensor log(const Tensor& x) { return unary(UnaryOp::Log, x); }
Tensor sqrt(const Tensor& x) { return unary(UnaryOp::Sqrt, x); }
Tensor abs(const Tensor& x) { return unary(UnaryOp::Abs, x); }
Tensor clamp_min(const Tensor& x, double lo) { return unary(UnaryOp::ClampMin, x, lo); }

Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target) {
  check_same(logits, target, "binary_cross_entropy_with_logits");
  IPSNET_CHECK(logits.shape() == target.shape(), "binary_cross_entropy_with_logits: logits ",
               shape_str(logits.shape()), " vs target ", shape_str(target.shape()), ": shapes must match");
  return mean(binary(BinaryOp::BceWithLogits, logits, target));
}

namespace {
struct MaskedFillBackward : Node {
  SavedTensor mask;
  const char* name() const override { return "MaskedFillBackward"; }
  std::vector<Tensor> apply(const Tensor& g) override { return {masked_fill(g, mask.unpack(name()), 0.0)}; }
  void release() override { mask.reset(); }
};
}  // namespace

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  check_defined(x, "masked_fill", "x");
  check_defined(mask, "masked_fill", "mask");
  IPSNET_CHECK(x.device() == mask.device(), "masked_fill: x on ", x.device().str(), ", mask on ",
               mask.device().str());
  Shape s = broadcast_shapes(x.shape(), mask.shape(), "masked_fill");
  IPSNET_CHECK(s == x.shape(), "masked_fill: mask ", shape_str(mask.shape()),
               " does not broadcast to x ", shape_str(x.shape()));
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor m = mask.detach().expand(s);
  backend_for(x.device()).masked_fill(x.detach(), m, value, out);
  if (any_requires_grad({&x})) {
    auto n = std::make_shared<MaskedFillBackward>();
    n->mask = SavedTensor(mask);
    set_history(out, n, {x});
  }
  return out;
}

void add_(const Tensor& a, const Tensor& b) {
  check_same(a, b, "add_");
  IPSNET_CHECK(!(grad_enabled() && a.requires_grad()),
               "add_: in-place change of a tensor that requires grad (use a NoGradGuard)");
  Shape s = broadcast_shapes(a.shape(), b.shape(), "add_");
  IPSNET_CHECK(s == a.shape(), "add_: ", shape_str(b.shape()), " does not broadcast to ",
               shape_str(a.shape()));
  backend_for(a.device()).binary(BinaryOp::Add, a.detach(), b.detach().expand(s), a.detach());
  a.storage()->bump_version();
}

void mul_(const Tensor& a, double s) {
  check_defined(a, "mul_", "a");
  IPSNET_CHECK(!(grad_enabled() && a.requires_grad()),
               "mul_: in-place change of a tensor that requires grad (use a NoGradGuard)");
  IPSNET_CHECK(a.is_contiguous(), "mul_: expected a contiguous tensor");
  backend_for(a.device()).unary(UnaryOp::MulScalar, a.detach(), a.detach(), s);
  a.storage()->bump_version();
}

}  // namespace ops

Tensor operator+(const Tensor& a, const Tensor& b) { return ops::add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return ops::sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return ops::mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return ops::div(a, b); }
Tensor operator+(const Tensor& a, double s) { return ops::add(a, s); }
Tensor operator-(const Tensor& a, double s) { return ops::add(a, -s); }
Tensor operator*(const Tensor& a, double s) { return ops::mul(a, s); }
Tensor operator/(const Tensor& a, double s) { return ops::mul(a, 1.0 / s); }
Tensor operator*(double s, const Tensor& a) { return ops::mul(a, s); }
Tensor operator-(const Tensor& a) { return ops::neg(a); }

}  // namespace ipsnet

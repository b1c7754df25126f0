// matmul and linear through the backend GEMM (CBLAS on the CPU, cuBLAS on CUDA),
// or its bfloat16 form under PrecisionGuard (precision: bf16).
// A transposed view is passed to GEMM as a transpose flag, not copied.
#include "engine/autograd/grad_mode.h"
#include "engine/autograd/node.h"
#include "engine/ops/ops.h"

namespace ipsnet {
namespace ops {

namespace {

// How a (..., r, c) operand is handed to GEMM.
struct GemmOperand {
  Tensor t;          // the tensor whose storage GEMM reads
  bool trans = false;
  int64_t ld = 0;
  int64_t batch_stride = 0;
};

// Flattens batch dims into one stride if they allow it.
bool uniform_batch_stride(const Tensor& t, int64_t* stride) {
  int64_t nb = t.dim() - 2;
  int64_t expect = -1;
  int64_t inner_count = 1;
  // walk batch dims from innermost: stride[d] must equal stride[d+1]*size[d+1] (or all zero)
  for (int64_t d = nb - 1; d >= 0; --d) {
    int64_t sz = t.size(d), st = t.stride(d);
    if (sz == 1) continue;
    if (expect < 0) {
      expect = st;
      inner_count = sz;
      continue;
    }
    if (st != expect * inner_count) return false;
    inner_count *= sz;
  }
  *stride = expect < 0 ? 0 : expect;
  return true;
}

GemmOperand prepare(const Tensor& x) {
  GemmOperand g;
  Tensor t = x;
  for (int attempt = 0; attempt < 2; ++attempt) {
    int64_t r = t.size(-2), c = t.size(-1);
    bool ok = false;
    if (t.stride(-1) == 1 && (t.stride(-2) >= c || r == 1)) {
      g.trans = false;
      g.ld = std::max<int64_t>(r == 1 ? c : t.stride(-2), std::max<int64_t>(c, 1));
      ok = true;
    } else if (t.stride(-2) == 1 && (t.stride(-1) >= r || c == 1)) {
      g.trans = true;
      g.ld = std::max<int64_t>(c == 1 ? r : t.stride(-1), std::max<int64_t>(r, 1));
      ok = true;
    }
    int64_t bs = 0;
    if (ok && uniform_batch_stride(t, &bs)) {
      g.t = t;
      g.batch_stride = bs;
      return g;
    }
    t = t.contiguous();
  }
  IPSNET_FAIL("matmul: internal layout error for ", shape_str(x.shape()));
}

struct MatmulBackward : Node {
  SavedTensor a, b;  // a only when B needs grad, b only when A needs grad
  Shape a_shape, b_shape;
  bool need_a, need_b;
  bool bf16 = false;  // the forward's precision: the gradient products run in it too
  const char* name() const override { return "MatmulBackward"; }
  std::vector<Tensor> apply(const Tensor& g) override {
    PrecisionGuard precision(bf16);
    Tensor da, db;
    if (need_a) da = sum_to(matmul(g, b.unpack(name()).transpose(-1, -2)), a_shape);
    if (need_b) {
      Tensor A = a.unpack(name());
      if (b_shape.size() == 2 && a_shape.size() > 2) {
        // dB = A^T g with the batch folded into the rows.
        Tensor A2 = A.reshape({-1, A.size(-1)});
        Tensor g2 = g.reshape({-1, g.size(-1)});
        db = matmul(A2.transpose(0, 1), g2);
      } else {
        db = sum_to(matmul(A.transpose(-1, -2), g), b_shape);
      }
    }
    return {da, db};
  }
  void release() override {
    a.reset();
    b.reset();
  }
};

// precision: bf16 (PrecisionGuard) on a backend with a bfloat16 matmul.
bool use_bf16(const Backend& be, const Tensor& a) {
  return precision_bf16_enabled() && a.dtype() == DType::Float32 && be.supports_bf16_gemm();
}

Tensor matmul_nd(const Tensor& a, const Tensor& b) {
  int64_t m = a.size(-2), k = a.size(-1), k2 = b.size(-2), n = b.size(-1);
  IPSNET_CHECK(k == k2, "matmul: ", shape_str(a.shape()), " @ ", shape_str(b.shape()),
               ": inner dimensions differ (", k, " vs ", k2, ")");
  Backend& be = backend_for(a.device());
  if (b.dim() == 2 && a.dim() >= 2) {
    // Fold a's batch into rows when a's rows are laid out uniformly.
    Tensor a2 = a.dim() == 2 ? a : a.reshape({-1, k});
    GemmOperand A = prepare(a2), B = prepare(b);
    int64_t rows = a2.size(0);
    Shape os(a.shape().begin(), a.shape().end() - 1);
    os.push_back(n);
    Tensor out = Tensor::empty(os, a.dtype(), a.device());
    if (use_bf16(be, a))
      be.gemm_bf16(A.trans, B.trans, rows, n, k, A.t, A.ld, 0, B.t, B.ld, 0, out, n, 0, 1);
    else
      be.gemm(A.trans, B.trans, rows, n, k, 1.0, A.t, A.ld, 0, B.t, B.ld, 0, 0.0, out, n, 0, 1);
    return out;
  }
  Shape ba(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
  Shape batch = broadcast_shapes(ba, bb, "matmul");
  Shape sa = batch, sb = batch;
  sa.push_back(m);
  sa.push_back(k);
  sb.push_back(k);
  sb.push_back(n);
  GemmOperand A = prepare(a.expand(sa)), B = prepare(b.expand(sb));
  int64_t nbatch = shape_numel(batch);
  Shape os = batch;
  os.push_back(m);
  os.push_back(n);
  Tensor out = Tensor::empty(os, a.dtype(), a.device());
  if (use_bf16(be, a))
    be.gemm_bf16(A.trans, B.trans, m, n, k, A.t, A.ld, A.batch_stride, B.t, B.ld, B.batch_stride, out, n, m * n,
                 nbatch);
  else
    be.gemm(A.trans, B.trans, m, n, k, 1.0, A.t, A.ld, A.batch_stride, B.t, B.ld, B.batch_stride, 0.0, out, n,
            m * n, nbatch);
  return out;
  return out;
}

}  // namespace

Tensor matmul(const Tensor& a_in, const Tensor& b_in) {
  check_same(a_in, b_in, "matmul");
  IPSNET_CHECK(is_floating(a_in.dtype()), "matmul: expected floating tensors, got ", dtype_name(a_in.dtype()));
  IPSNET_CHECK(a_in.dim() >= 1 && b_in.dim() >= 1, "matmul: scalars are not allowed: ",
               shape_str(a_in.shape()), " @ ", shape_str(b_in.shape()));
  Tensor a = a_in.detach(), b = b_in.detach();
  bool squeeze_a = false, squeeze_b = false;
  if (a.dim() == 1) { a = a.unsqueeze(0); squeeze_a = true; }
  if (b.dim() == 1) { b = b.unsqueeze(1); squeeze_b = true; }
  Tensor res = matmul_nd(a, b);
  if (any_requires_grad({&a_in, &b_in})) {
    // Record on the 2-D-or-more forms; the squeezes below are differentiable views.
    auto node = std::make_shared<MatmulBackward>();
    node->need_a = a_in.requires_grad();
    node->need_b = b_in.requires_grad();
    node->a_shape = a.shape();
    node->b_shape = b.shape();
    node->bf16 = precision_bf16_enabled();
    // Under precision: bf16 the gradient products round the saved operands to
    // bfloat16 anyway: intermediate operands are kept in bfloat16.
    const bool bf16 = use_bf16(backend_for(a.device()), a);
    if (node->need_b) node->a = bf16 && a_in.grad_fn() ? SavedTensor::bf16(a) : SavedTensor(a);
    if (node->need_a) node->b = bf16 && b_in.grad_fn() ? SavedTensor::bf16(b) : SavedTensor(b);
    Tensor ua = squeeze_a ? a_in.unsqueeze(0) : a_in;
    Tensor ub = squeeze_b ? b_in.unsqueeze(1) : b_in;
    set_history(res, node, {ua, ub});
  }
  if (squeeze_a) res = res.squeeze(-2);
  if (squeeze_b) res = res.squeeze(-1);
  return res;
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_defined(x, "linear", "x");
  check_defined(weight, "linear", "weight");
  IPSNET_CHECK(weight.dim() == 2, "linear: weight must be (out, in), got ", shape_str(weight.shape()));
  IPSNET_CHECK(x.dim() >= 1 && x.size(-1) == weight.size(1), "linear: input ", shape_str(x.shape()),
               " vs weight ", shape_str(weight.shape()), ": in_features mismatch");
  Tensor y = matmul(x, weight.transpose(0, 1));
  if (bias.defined()) {
    IPSNET_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), "linear: bias ",
                 shape_str(bias.shape()), " vs weight ", shape_str(weight.shape()),
                 ": out_features mismatch");
    y = add(y, bias);
  }
  return y;
}

}  // namespace ops
}  // namespace ipsnet

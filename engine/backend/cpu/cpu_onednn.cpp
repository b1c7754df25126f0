// oneDNN engine, streams, and the CPU conv/norm/pool implementation switch.
#include "engine/backend/cpu/cpu_onednn.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>

#include "engine/backend/cpu/cpu_backend.h"

namespace ipsnet {

namespace {
// 0 = not read yet, 1 = onednn, 2 = reference.
std::atomic<int> g_impl{0};

int parse_impl(const std::string& s) {
  if (s == "onednn") return 1;
  if (s == "reference") return 2;
  IPSNET_FAIL("set_cpu_conv_impl: expected \"onednn\" or \"reference\", got \"", s, "\"");
}

int current_impl() {
  int v = g_impl.load(std::memory_order_relaxed);
  if (v == 0) {
    const char* env = std::getenv("IPSNET_CPU_CONV");
    v = (env && *env) ? parse_impl(env) : 1;
    g_impl.store(v, std::memory_order_relaxed);
  }
  return v;
}
}  // namespace

void set_cpu_conv_impl(const std::string& impl) { g_impl.store(parse_impl(impl)); }

std::string cpu_conv_impl() { return current_impl() == 1 ? "onednn" : "reference"; }

namespace cpu {

dnnl::engine& onednn_engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

dnnl::stream& onednn_stream() {
  thread_local dnnl::stream s(onednn_engine());
  return s;
}

bool use_onednn(DType dtype) { return dtype == DType::Float32 && current_impl() == 1; }

void onednn_run(const dnnl::primitive& prim, const std::unordered_map<int, dnnl::memory>& args) {
  dnnl::stream& s = onednn_stream();
  prim.execute(s, args);
  s.wait();
}

void onednn_fail(const char* what, const std::string& geometry, const dnnl::error& e) {
  IPSNET_FAIL(what, " (oneDNN): ", e.what(), " (status ", static_cast<int>(e.status), ") for ",
              geometry);
}

}  // namespace cpu

// ---- bfloat16 matmul (precision: bf16) ----------------------------------------
// C[b] (m, n) = op(A[b]) (m, k) op(B[b]) (k, n): the float32 operands, read in
// place through strided descriptors, are reordered into the bfloat16 layouts
// the primitive asks for (format any), the kernel (AVX512-BF16 dot products,
// AMX tiles where present) accumulates in float32 and writes C in float32.
// A batch stride of 0 is oneDNN's broadcast batch of 1.

namespace {

struct MatmulBf16 {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
};

using dt = dnnl::memory::data_type;

// (batch, rows, cols) of a stored operand seen as op(X): X is stored (rows,
// cols) with row stride ld, or transposed (cols, rows).
dnnl::memory::desc strided_md(bool trans, int64_t batch, int64_t rows, int64_t cols, int64_t ld, int64_t stride,
                              dt type) {
  const int64_t span = trans ? cols * ld : rows * ld;  // elements of one stored matrix
  const int64_t bs = batch == 1 ? std::max<int64_t>(span, 1) : stride;
  return trans ? dnnl::memory::desc({batch, rows, cols}, type, {bs, 1, ld})
               : dnnl::memory::desc({batch, rows, cols}, type, {bs, ld, 1});
}

}  // namespace

bool CpuBackend::supports_bf16_gemm() const { return supports_bf16_conv(); }

void CpuBackend::gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const Tensor& a,
                           int64_t lda, int64_t stride_a, const Tensor& b, int64_t ldb, int64_t stride_b,
                           const Tensor& c, int64_t ldc, int64_t stride_c, int64_t batch) {
  IPSNET_CHECK(a.dtype() == DType::Float32 && b.dtype() == DType::Float32 && c.dtype() == DType::Float32,
               "gemm_bf16: expected float32 operands, got ", dtype_name(a.dtype()), ", ", dtype_name(b.dtype()),
               ", ", dtype_name(c.dtype()));
  IPSNET_CHECK(supports_bf16_gemm(), "gemm_bf16: this CPU has no bfloat16 matmul (needs AVX512-BF16)");
  if (m == 0 || n == 0 || batch == 0) return;
  if (k == 0) {  // empty reduction: the float32 gemm writes the zeros
    gemm(trans_a, trans_b, m, n, k, 1.0, a, lda, stride_a, b, ldb, stride_b, 0.0, c, ldc, stride_c, batch);
    return;
  }
  const int64_t ba = stride_a == 0 ? 1 : batch, bb = stride_b == 0 ? 1 : batch;
  if (batch > 1 && ba == 1 && bb == 1) {  // both broadcast: one product per output item
    for (int64_t i = 0; i < batch; ++i)
      gemm_bf16(trans_a, trans_b, m, n, k, a, lda, 0, b, ldb, 0,
                c.view({-1}).narrow(0, i * stride_c, (m - 1) * ldc + n), ldc, 0, 1);
    return;
  }
  const std::string geometry = str_cat("matmul (", batch, ", ", m, ", ", k, ") x (", k, ", ", n, ") ta ", trans_a,
                                       " tb ", trans_b, " lda ", lda, " ldb ", ldb, " ldc ", ldc, " sa ", stride_a,
                                       " sb ", stride_b, " sc ", stride_c);
  try {
    const dnnl::memory::desc a_user = strided_md(trans_a, ba, m, k, lda, stride_a, dt::f32);
    const dnnl::memory::desc b_user = strided_md(trans_b, bb, k, n, ldb, stride_b, dt::f32);
    const dnnl::memory::desc c_user = strided_md(false, batch, m, n, ldc, stride_c, dt::f32);
    auto e = cpu::onednn_cached<MatmulBf16>("matmul_bf16 " + geometry, [&] {
      using tag = dnnl::memory::format_tag;
      const dnnl::memory::desc a_md({ba, m, k}, dt::bf16, tag::any), b_md({bb, k, n}, dt::bf16, tag::any);
      dnnl::matmul::desc d(a_md, b_md, c_user);
      dnnl::matmul::primitive_desc pd(d, cpu::onednn_engine());
      return MatmulBf16{pd, dnnl::matmul(pd)};
    });
    dnnl::engine& eng = cpu::onednn_engine();
    dnnl::stream& s = cpu::onednn_stream();
    auto bf16_copy = [&](const Tensor& t, const dnnl::memory::desc& user, const dnnl::memory::desc& want,
                         Tensor* scratch) {
      dnnl::memory src(user, eng, t.raw_data());
      *scratch = Tensor::empty({static_cast<int64_t>((want.get_size() + 3) / 4)}, DType::Float32);
      dnnl::memory dst(want, eng, scratch->raw_data());
      dnnl::reorder(src, dst).execute(s, src, dst);
      return dst;
    };
    Tensor sa, sb;
    dnnl::memory am = bf16_copy(a, a_user, e->pd.src_desc(), &sa);
    dnnl::memory bm = bf16_copy(b, b_user, e->pd.weights_desc(), &sb);
    dnnl::memory cm(c_user, eng, c.raw_data());
    e->prim.execute(s, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
    s.wait();
  } catch (const dnnl::error& err) {
    cpu::onednn_fail("matmul (bfloat16)", geometry, err);
  }
}

}  // namespace ipsnet

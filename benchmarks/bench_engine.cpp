// Engine micro-benchmarks: matmul against OpenBLAS's own sgemm at 1024^3 and
// at the shapes of the IPS aggregator (official Megapixel MNIST config:
// B 16, M = I = 100, D 128, H 8, D_k 16, n_token 4, D_inner 512), and
// elementwise ops against memcpy bandwidth. Each ipsnet result is validated
// against the direct BLAS call before timing (DESIGN.md).
//   build/benchmarks/bench_engine --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <cmath>
#include <cstring>

#include "engine/engine.h"

using namespace ipsnet;

namespace {

struct Shape3 {
  int64_t m, n, k;
};

// Args: m, n, k. ipsnet::ops::matmul of (m,k) @ (k,n).
void BM_MatmulIpsnet(benchmark::State& st) {
  int64_t m = st.range(0), n = st.range(1), k = st.range(2);
  Generator g(0);
  Tensor a = Tensor::randn({m, k}, g), b = Tensor::randn({k, n}, g);
  // Validate against BLAS.
  Tensor c = ops::matmul(a, b);
  std::vector<float> ref(static_cast<size_t>(m * n));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), 1.f, a.data<float>(), static_cast<int>(k), b.data<float>(),
              static_cast<int>(n), 0.f, ref.data(), static_cast<int>(n));
  std::vector<float> got = c.to_vector<float>();
  for (size_t i = 0; i < ref.size(); ++i)
    if (std::fabs(got[i] - ref[i]) > 1e-3f * (1 + std::fabs(ref[i]))) {
      st.SkipWithError("matmul result differs from cblas_sgemm");
      return;
    }
  for (auto _ : st) {
    Tensor out = ops::matmul(a, b);
    benchmark::DoNotOptimize(out.raw_data());
  }
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * m * n * k * st.iterations() / 1e9, benchmark::Counter::kIsRate);
}

void BM_MatmulOpenBLAS(benchmark::State& st) {
  int64_t m = st.range(0), n = st.range(1), k = st.range(2);
  std::vector<float> a(static_cast<size_t>(m * k), 0.5f), b(static_cast<size_t>(k * n), 0.25f),
      c(static_cast<size_t>(m * n));
  for (auto _ : st) {
    // Like ipsnet, allocate the output each call.
    std::vector<float> out(static_cast<size_t>(m * n));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
                static_cast<int>(k), 1.f, a.data(), static_cast<int>(k), b.data(), static_cast<int>(n), 0.f,
                out.data(), static_cast<int>(n));
    benchmark::DoNotOptimize(out.data());
  }
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * m * n * k * st.iterations() / 1e9, benchmark::Counter::kIsRate);
}

// Linear layer form x W^T (the transposed weight goes to BLAS as a flag).
void BM_LinearIpsnet(benchmark::State& st) {
  int64_t m = st.range(0), n = st.range(1), k = st.range(2);
  Generator g(0);
  Tensor x = Tensor::randn({m, k}, g), w = Tensor::randn({n, k}, g);
  for (auto _ : st) {
    Tensor out = ops::linear(x, w);
    benchmark::DoNotOptimize(out.raw_data());
  }
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * m * n * k * st.iterations() / 1e9, benchmark::Counter::kIsRate);
}

void BM_LinearOpenBLAS(benchmark::State& st) {
  int64_t m = st.range(0), n = st.range(1), k = st.range(2);
  std::vector<float> a(static_cast<size_t>(m * k), 0.5f), b(static_cast<size_t>(n * k), 0.25f);
  for (auto _ : st) {
    std::vector<float> out(static_cast<size_t>(m * n));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
                static_cast<int>(k), 1.f, a.data(), static_cast<int>(k), b.data(), static_cast<int>(k), 0.f,
                out.data(), static_cast<int>(n));
    benchmark::DoNotOptimize(out.data());
  }
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * m * n * k * st.iterations() / 1e9, benchmark::Counter::kIsRate);
}

// Attention scores q k^T: (B, H, n_token, D_k) @ (B, H, D_k, L), q broadcast over B.
void BM_AttentionScoresIpsnet(benchmark::State& st) {
  int64_t B = 16, H = 8, T = 4, Dk = 16, L = st.range(0);
  Generator g(0);
  Tensor q = Tensor::randn({1, H, T, Dk}, g), k = Tensor::randn({B, H, L, Dk}, g);
  for (auto _ : st) {
    Tensor s = ops::matmul(q, k.transpose(-1, -2));
    benchmark::DoNotOptimize(s.raw_data());
  }
  st.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * B * H * T * Dk * L * st.iterations() / 1e9, benchmark::Counter::kIsRate);
}

void BM_AttentionScoresOpenBLAS(benchmark::State& st) {
  int64_t B = 16, H = 8, T = 4, Dk = 16, L = st.range(0);
  std::vector<float> q(static_cast<size_t>(H * T * Dk), 0.1f), k(static_cast<size_t>(B * H * L * Dk), 0.2f);
  for (auto _ : st) {
    std::vector<float> s(static_cast<size_t>(B * H * T * L));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(T), static_cast<int>(L),
                    static_cast<int>(Dk), 1.f, q.data() + h * T * Dk, static_cast<int>(Dk),
                    k.data() + (b * H + h) * L * Dk, static_cast<int>(Dk), 0.f, s.data() + (b * H + h) * T * L,
                    static_cast<int>(L));
    benchmark::DoNotOptimize(s.data());
  }
  st.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * B * H * T * Dk * L * st.iterations() / 1e9, benchmark::Counter::kIsRate);
}

// Elementwise bandwidth: bytes read + written per second.
void BM_Relu(benchmark::State& st) {
  int64_t n = st.range(0);
  Generator g(0);
  Tensor x = Tensor::randn({n}, g);
  for (auto _ : st) {
    Tensor y = ops::relu(x);
    benchmark::DoNotOptimize(y.raw_data());
  }
  st.SetBytesProcessed(st.iterations() * n * 8);
}

void BM_AddBroadcast(benchmark::State& st) {
  int64_t n = st.range(0);
  Generator g(0);
  Tensor x = Tensor::randn({n / 128, 128}, g), b = Tensor::randn({128}, g);
  for (auto _ : st) {
    Tensor y = ops::add(x, b);
    benchmark::DoNotOptimize(y.raw_data());
  }
  st.SetBytesProcessed(st.iterations() * n * 8);
}

void BM_Add(benchmark::State& st) {
  int64_t n = st.range(0);
  Generator g(0);
  Tensor x = Tensor::randn({n}, g), z = Tensor::randn({n}, g);
  for (auto _ : st) {
    Tensor y = ops::add(x, z);
    benchmark::DoNotOptimize(y.raw_data());
  }
  st.SetBytesProcessed(st.iterations() * n * 12);
}

void BM_Memcpy(benchmark::State& st) {
  int64_t n = st.range(0);
  std::vector<float> a(static_cast<size_t>(n), 1.f);
  for (auto _ : st) {
    std::vector<float> b(static_cast<size_t>(n));
    std::memcpy(b.data(), a.data(), static_cast<size_t>(n) * 4);
    benchmark::DoNotOptimize(b.data());
  }
  st.SetBytesProcessed(st.iterations() * n * 8);
}

// m, n, k: 1024^3; the aggregator's projections at selection (B*(M+I) = 3200
// rows) and training (B*M = 1600 rows); the MLP on B*n_token = 64 rows.
#define GEMM_SHAPES                                                                         \
  Args({1024, 1024, 1024})->Args({3200, 128, 128})->Args({1600, 128, 128})->Args({64, 512, 128}) \
      ->Args({64, 128, 512})->Unit(benchmark::kMicrosecond)

BENCHMARK(BM_MatmulIpsnet)->GEMM_SHAPES;
BENCHMARK(BM_MatmulOpenBLAS)->GEMM_SHAPES;
BENCHMARK(BM_LinearIpsnet)->GEMM_SHAPES;
BENCHMARK(BM_LinearOpenBLAS)->GEMM_SHAPES;
BENCHMARK(BM_AttentionScoresIpsnet)->Arg(200)->Arg(100)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_AttentionScoresOpenBLAS)->Arg(200)->Arg(100)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Relu)->Arg(1 << 24)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Add)->Arg(1 << 24)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_AddBroadcast)->Arg(1 << 24)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Memcpy)->Arg(1 << 24)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();

// Convolution, batch-norm and max-pool primitives of the CPU backend at the
// shapes of the 2-stage ResNet-18 patch encoder (stem + layer1 + layer2) on
// 1-channel 50x50 patches, batch 1600: oneDNN (float32 fast path) against the
// reference path (im2col + OpenBLAS gemm, float32). Each primitive is first
// validated on a small batch: oneDNN vs reference within 1e-4 relative
// (DESIGN.md: validate, then time).
//   build/benchmarks/bench_conv --benchmark_counters_tabular=true
// Args: shape index, impl (0 = onednn, 1 = reference). GFLOP/s counts
// 2 * MACs per pass (each backward pass has the forward's MAC count).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/engine.h"

using namespace ipsnet;

namespace {

constexpr int64_t kBatch = 1600;

struct ConvShape {
  const char* name;
  int64_t c, h, o, k, s, p;  // square input h x h, kernel k x k, stride s, padding p
};

// conv1 7x7 s2 p3 1->64 (50 -> 25); layer1 3x3 64->64 at 13; layer2.0.conv1
// 3x3 s2 64->128 (13 -> 7); layer2 3x3 128->128 at 7; downsample 1x1 s2 64->128.
const ConvShape kShapes[] = {
    {"conv1_7x7s2_1to64_50", 1, 50, 64, 7, 2, 3},
    {"layer1_3x3_64to64_13", 64, 13, 64, 3, 1, 1},
    {"layer2_3x3s2_64to128_13", 64, 13, 128, 3, 2, 1},
    {"layer2_3x3_128to128_7", 128, 7, 128, 3, 1, 1},
    {"downsample_1x1s2_64to128_13", 64, 13, 128, 1, 2, 0},
};

Conv2dGeometry geometry(const ConvShape& s, int64_t n) {
  Conv2dGeometry g;
  g.n = n;
  g.c = s.c;
  g.h = g.w = s.h;
  g.o = s.o;
  g.kh = g.kw = s.k;
  g.sh = g.sw = s.s;
  g.ph = g.pw = s.p;
  g.ho = g.wo = conv_out_size(s.h, s.k, s.s, s.p, 1);
  return g;
}

struct ConvTensors {
  Tensor x, w, y, dy, dx, dw;  // x (N, C, H, W), w (O, C, k, k), y/dy (N, O, ho, wo)
};

ConvTensors make_tensors(const Conv2dGeometry& g, uint64_t seed) {
  Generator gen(seed);
  ConvTensors t;
  t.x = Tensor::randn({g.n, g.c, g.h, g.w}, gen);
  t.w = Tensor::randn({g.o, g.c, g.kh, g.kw}, gen, 0.0, 1.0 / std::sqrt(double(g.c * g.kh * g.kw)));
  t.y = Tensor::empty({g.n, g.o, g.ho, g.wo});
  t.dy = Tensor::randn({g.n, g.o, g.ho, g.wo}, gen);
  t.dx = Tensor::empty({g.n, g.c, g.h, g.w});
  t.dw = Tensor::empty({g.o, g.c, g.kh, g.kw});
  return t;
}

double rel_err(const Tensor& a, const Tensor& b) {
  std::vector<float> va = a.to_vector<float>(), vb = b.to_vector<float>();
  double num = 0, den = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    if (std::isnan(va[i])) return INFINITY;
    num = std::max(num, double(std::fabs(va[i] - vb[i])));
    den = std::max(den, double(std::fabs(vb[i])));
  }
  return den > 0 ? num / den : num;
}

// Runs forward, backward-data and backward-weight on 8 images with both
// implementations and returns the worst relative difference.
double validate(const ConvShape& s) {
  Backend& be = backend_for(Device::cpu());
  const Conv2dGeometry g = geometry(s, 8);
  ConvTensors a = make_tensors(g, 1), b = make_tensors(g, 1);
  set_cpu_conv_impl("onednn");
  be.conv2d_forward(a.x, a.w, Tensor(), a.y, g);
  be.conv2d_backward_data(a.dy, a.w, a.dx, g);
  be.conv2d_backward_weight(a.x, a.dy, a.dw, Tensor(), g);
  set_cpu_conv_impl("reference");
  be.conv2d_forward(b.x, b.w, Tensor(), b.y, g);
  be.conv2d_backward_data(b.dy, b.w, b.dx, g);
  be.conv2d_backward_weight(b.x, b.dy, b.dw, Tensor(), g);
  return std::max({rel_err(a.y, b.y), rel_err(a.dx, b.dx), rel_err(a.dw, b.dw)});
}

enum class Pass { Forward, BackwardData, BackwardWeight };

void BM_Conv(benchmark::State& st, Pass pass) {
  const ConvShape& s = kShapes[st.range(0)];
  const bool reference = st.range(1) == 1;
  const double err = validate(s);
  if (!(err < 1e-4)) {
    st.SkipWithError(str_cat("oneDNN and reference differ: rel err ", err).c_str());
    return;
  }
  set_cpu_conv_impl(reference ? "reference" : "onednn");
  Backend& be = backend_for(Device::cpu());
  const Conv2dGeometry g = geometry(s, kBatch);
  ConvTensors t = make_tensors(g, 2);
  auto run = [&] {
    switch (pass) {
      case Pass::Forward: be.conv2d_forward(t.x, t.w, Tensor(), t.y, g); break;
      case Pass::BackwardData: be.conv2d_backward_data(t.dy, t.w, t.dx, g); break;
      case Pass::BackwardWeight: be.conv2d_backward_weight(t.x, t.dy, t.dw, Tensor(), g); break;
    }
  };
  run();  // warm-up: primitive creation and first-touch of the outputs
  for (auto _ : st) run();
  st.SetLabel(str_cat(s.name, reference ? " reference" : " onednn"));
  st.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * g.macs() * double(st.iterations()) / 1e9, benchmark::Counter::kIsRate);
  set_cpu_conv_impl("onednn");
}

void BM_ConvForward(benchmark::State& st) { BM_Conv(st, Pass::Forward); }
void BM_ConvBackwardData(benchmark::State& st) { BM_Conv(st, Pass::BackwardData); }
void BM_ConvBackwardWeight(benchmark::State& st) { BM_Conv(st, Pass::BackwardWeight); }

void conv_args(benchmark::internal::Benchmark* b) {
  for (int64_t i = 0; i < int64_t(sizeof(kShapes) / sizeof(kShapes[0])); ++i)
    for (int64_t impl : {0, 1}) b->Args({i, impl});
  b->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(1.0);
}

BENCHMARK(BM_ConvForward)->Apply(conv_args);
BENCHMARK(BM_ConvBackwardData)->Apply(conv_args);
BENCHMARK(BM_ConvBackwardWeight)->Apply(conv_args);

// bn1 (training) on conv1's output (1600, 64, 25, 25) and the stem max pool
// 3x3 s2 p1 -> (1600, 64, 13, 13). Memory bound: GB/s of tensors read + written.
void BM_BatchNormTraining(benchmark::State& st) {
  // Arg 0: oneDNN batch norm (IPSNET_ONEDNN_BN=1); 1: the loops (the float32 default).
  if (st.range(0) == 0) setenv("IPSNET_ONEDNN_BN", "1", 1);
  Backend& be = backend_for(Device::cpu());
  BatchNormGeometry g{kBatch, 64, 25 * 25};
  Generator gen(3);
  Tensor x = Tensor::randn({g.n, g.c, g.s}, gen), y = Tensor::empty({g.n, g.c, g.s});
  Tensor gm = Tensor::ones({g.c}), bt = Tensor::zeros({g.c});
  Tensor mean = Tensor::empty({g.c}), rstd = Tensor::empty({g.c});
  Tensor rm = Tensor::zeros({g.c}), rv = Tensor::ones({g.c});
  be.batch_norm_forward_training(x, gm, bt, y, mean, rstd, rm, rv, g, 0.1, 1e-5);  // warm-up
  for (auto _ : st) be.batch_norm_forward_training(x, gm, bt, y, mean, rstd, rm, rv, g, 0.1, 1e-5);
  st.SetLabel(st.range(0) == 1 ? "loops" : "onednn");
  unsetenv("IPSNET_ONEDNN_BN");
  st.counters["GB/s"] = benchmark::Counter(2.0 * double(x.nbytes()) * double(st.iterations()) / 1e9,
                                           benchmark::Counter::kIsRate);
  set_cpu_conv_impl("onednn");
}

void BM_BatchNormBackward(benchmark::State& st) {
  // Arg 0: oneDNN batch norm (IPSNET_ONEDNN_BN=1); 1: the loops (the float32 default).
  if (st.range(0) == 0) setenv("IPSNET_ONEDNN_BN", "1", 1);
  Backend& be = backend_for(Device::cpu());
  BatchNormGeometry g{kBatch, 64, 25 * 25};
  Generator gen(3);
  Tensor x = Tensor::randn({g.n, g.c, g.s}, gen), dy = Tensor::randn({g.n, g.c, g.s}, gen);
  Tensor dx = Tensor::empty({g.n, g.c, g.s});
  Tensor gm = Tensor::ones({g.c}), mean = Tensor::zeros({g.c}), rstd = Tensor::ones({g.c});
  Tensor dg = Tensor::empty({g.c}), db = Tensor::empty({g.c});
  be.batch_norm_backward(x, gm, dy, mean, rstd, dx, dg, db, g, false, 1e-5);  // warm-up
  for (auto _ : st) be.batch_norm_backward(x, gm, dy, mean, rstd, dx, dg, db, g, false, 1e-5);
  st.SetLabel(st.range(0) == 1 ? "loops" : "onednn");
  unsetenv("IPSNET_ONEDNN_BN");
  st.counters["GB/s"] = benchmark::Counter(3.0 * double(x.nbytes()) * double(st.iterations()) / 1e9,
                                           benchmark::Counter::kIsRate);
  set_cpu_conv_impl("onednn");
}

// Arg: 0 = with indices (training: the loops), 1 = without (inference: oneDNN).
void BM_MaxPoolForward(benchmark::State& st) {
  Backend& be = backend_for(Device::cpu());
  Pool2dGeometry g;
  g.n = kBatch;
  g.c = 64;
  g.h = g.w = 25;
  g.kh = g.kw = 3;
  g.sh = g.sw = 2;
  g.ph = g.pw = 1;
  g.ho = g.wo = 13;
  Generator gen(4);
  Tensor x = Tensor::randn({g.n, g.c, g.h, g.w}, gen), y = Tensor::empty({g.n, g.c, g.ho, g.wo});
  Tensor idx = st.range(0) == 0 ? Tensor::empty({g.n, g.c, g.ho, g.wo}, DType::Int64) : Tensor();
  be.max_pool2d_forward(x, y, idx, g);  // warm-up
  for (auto _ : st) be.max_pool2d_forward(x, y, idx, g);
  st.SetLabel(st.range(0) == 0 ? "with indices (loops)" : "inference (onednn)");
  st.counters["GB/s"] = benchmark::Counter(double(x.nbytes() + y.nbytes()) * double(st.iterations()) / 1e9,
                                           benchmark::Counter::kIsRate);
}

void BM_MaxPoolBackward(benchmark::State& st) {
  Backend& be = backend_for(Device::cpu());
  Pool2dGeometry g;
  g.n = kBatch;
  g.c = 64;
  g.h = g.w = 25;
  g.kh = g.kw = 3;
  g.sh = g.sw = 2;
  g.ph = g.pw = 1;
  g.ho = g.wo = 13;
  Generator gen(4);
  Tensor x = Tensor::randn({g.n, g.c, g.h, g.w}, gen), y = Tensor::empty({g.n, g.c, g.ho, g.wo});
  Tensor idx = Tensor::empty({g.n, g.c, g.ho, g.wo}, DType::Int64);
  be.max_pool2d_forward(x, y, idx, g);
  Tensor dx = Tensor::empty(x.shape());
  be.max_pool2d_backward(y, idx, dx, g);  // warm-up
  for (auto _ : st) be.max_pool2d_backward(y, idx, dx, g);
  st.counters["GB/s"] = benchmark::Counter(
      double(dx.nbytes() + y.nbytes() + idx.nbytes()) * double(st.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

BENCHMARK(BM_BatchNormTraining)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_BatchNormBackward)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_MaxPoolForward)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_MaxPoolBackward)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();

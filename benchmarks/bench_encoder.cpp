// The patch encoder of the official Megapixel MNIST config (2-stage
// ResNet-18, 1-channel 50x50 patches) at batch 1600 = B*M: the no-grad
// eval-mode forward that IPS selection runs, and forward+backward in train
// mode (the training pass). Compare with PyTorch through
// scripts/compare_encoder_pytorch.py (same machine, same thread count).
//   build/benchmarks/bench_encoder --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include "engine/engine.h"
#include "models/resnet.h"

using namespace ipsnet;

namespace {

// Multiply-adds x 2 of conv1 + layer1 + layer2 on a 50x50 patch.
double encoder_gflop_per_patch() {
  auto conv = [](double ho, double wo, double cin, double cout, double k) { return 2.0 * ho * wo * cin * cout * k * k; };
  double f = conv(25, 25, 1, 64, 7);                  // conv1 -> 25x25
  f += 4 * conv(13, 13, 64, 64, 3);                   // layer1 at 13x13
  f += conv(7, 7, 64, 128, 3) + conv(7, 7, 64, 128, 1);  // layer2.0 conv1 (s2), downsample
  f += 3 * conv(7, 7, 128, 128, 3);                   // the other layer2 convs
  return f / 1e9;
}

// Arg 1: BatchNorm folded into the convolutions (the fold_bn selection shortcut).
// Arg 2: bfloat16 convolutions (the optional selection_bf16; skipped where unsupported).
void BM_SelectionForward(benchmark::State& st) {
  const int64_t n = st.range(0);
  const bool bf16 = st.range(2) != 0;
  if (bf16 && !backend_for(Device::cpu()).supports_bf16_conv()) {
    st.SkipWithError("no bfloat16 convolution on this CPU (needs AVX512-BF16)");
    return;
  }
  ConvBf16Guard bf(bf16);
  Generator g(0);
  ResNet net(ResNetOptions().depth(18).in_channels(1).n_res_blocks(2), g);
  net.eval();
  net.set_fold_bn(st.range(1) != 0);
  Tensor x = Tensor::rand({n, 1, 50, 50}, g);
  NoGradGuard ng;
  Tensor y = net.forward(x);  // warm-up (primitive creation)
  if (y.shape() != Shape{n, 128}) st.SkipWithError("unexpected encoder output shape");
  for (auto _ : st) {
    Tensor out = net.forward(x);
    benchmark::DoNotOptimize(out.raw_data());
  }
  st.counters["patches/s"] = benchmark::Counter(static_cast<double>(n * st.iterations()), benchmark::Counter::kIsRate);
  st.counters["GFLOP/s"] =
      benchmark::Counter(encoder_gflop_per_patch() * n * st.iterations(), benchmark::Counter::kIsRate);
}

// Arg 1: precision bf16 (convolutions forward and backward in bfloat16 with
// float32 accumulation, PrecisionGuard; skipped where unsupported).
void BM_TrainingPass(benchmark::State& st) {
  const int64_t n = st.range(0);
  const bool bf16 = st.range(1) != 0;
  if (bf16 && !backend_for(Device::cpu()).supports_bf16_conv()) {
    st.SkipWithError("no bfloat16 convolution on this CPU (needs AVX512-BF16)");
    return;
  }
  PrecisionGuard precision(bf16);
  Generator g(0);
  ResNet net(ResNetOptions().depth(18).in_channels(1).n_res_blocks(2), g);
  net.train();
  Tensor x = Tensor::rand({n, 1, 50, 50}, g);
  Tensor r = Tensor::rand({n, 128}, g);
  for (auto _ : st) {
    net.zero_grad();
    Tensor loss = ops::sum(ops::mul(net.forward(x), r));
    loss.backward();
    benchmark::DoNotOptimize(loss.raw_data());
  }
  st.counters["patches/s"] = benchmark::Counter(static_cast<double>(n * st.iterations()), benchmark::Counter::kIsRate);
  // Backward costs about twice the forward.
  st.counters["GFLOP/s"] =
      benchmark::Counter(3 * encoder_gflop_per_patch() * n * st.iterations(), benchmark::Counter::kIsRate);
}

BENCHMARK(BM_SelectionForward)->Args({1600, 0, 0})->Args({1600, 1, 0})->Args({1600, 0, 1})->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_TrainingPass)->Args({1600, 0})->Args({1600, 1})->Unit(benchmark::kMillisecond)->MinTime(2.0);

}  // namespace

BENCHMARK_MAIN();

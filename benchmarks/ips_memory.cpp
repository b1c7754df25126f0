// ips_memory: peak memory and speed of one IPS training step (SPEC sections
// 1, 4, 8): selection for all B images, forward, backward, optimizer step.
//
// Sweeps (default): image side (hence N) x loading mode, M, I, B, patch size,
// the exact selection shortcuts, and CAMELYON-like feature bags up to 250,000
// patches per image. Counters per benchmark:
//   peak_alloc     peak bytes allocated to tensors (and library scratch) over the timed steps
//   peak_reserved  peak bytes obtained from the system by the allocator
//   model_peak     the analytic model of docs/memory_model.md; model_err = model/measured - 1
//   s_per_step, img_per_s, N, M, I, B, patch, mode (0 lazy, 1 eager, 2 eager sequential)
//   cpu_s_per_step  CPU seconds of the whole process per step (all threads)
// The first step of every configuration is a warm-up and is not measured.
//
// One configuration from the command line (e.g. the official Megapixel MNIST config):
//   ips_memory --config configs/mnist.yaml [--set key=value ...] [--side 1500]
//              [--shortcuts on|off] [--fold-bn on|off] [--steps 3] [--features N --F 2048]
// Google Benchmark flags pass through (--benchmark_out=r.json --benchmark_out_format=json).
// Image datasets are generated on first use into $IPSNET_BENCH_DATA (default
// /tmp/ipsnet_bench_data/<side>-n<images>); --data DIR uses an existing one
// instead (a canvas set, or photographs from import-images /
// import-traffic-signs: N then follows from each image's size and the grid).
//
// RGB photographs (e.g. 1200 x 1600 from import-traffic-signs):
//   ips_memory --photos DIR [--steps 1]
// sweeps N (patch 100, stride 100 / 50 / 33: N = 192 / 713 / 1,564 at
// 1200 x 1600) x lazy / eager, then M, I and B, on a reduced traffic config
// (ResNet-18 with 2 stages, D 128, 3 channels, ImageNet normalisation).
#include <benchmark/benchmark.h>

#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "data/megapixel_mnist.h"
#include "data/photo_source.h"
#include "data/source.h"
#include "data/mnist.h"
#include "engine/backend/device_select.h"
#include "engine/engine.h"
#include "models/ips_net.h"
#include "models/ips_selection.h"
#include "models/resnet.h"
#include "train/config.h"
#include "train/methods/ips.h"
#include "train/trainer.h"

namespace ipsnet {
namespace {

namespace fs = std::filesystem;

constexpr double kMiB = 1024.0 * 1024.0;

enum class Mode { Lazy = 0, Eager = 1, EagerSeq = 2 };

const char* mode_name(Mode m) { return m == Mode::Lazy ? "lazy" : m == Mode::Eager ? "eager" : "eager_seq"; }

// Peak resident set of the process (VmHWM), bytes; reset_peak_rss() restarts it.
int64_t peak_rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<int64_t>(ru.ru_maxrss) * 1024;
}
// CPU time of the whole process (all threads), seconds: on a loaded machine a
// fairer measure of a step's work than the wall time.
double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}
void reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  if (f.good()) f << "5";
}

// ---------------------------------------------------------------------------
// The analytic peak-memory model (docs/memory_model.md). Float32, except the
// activations precision: bf16 saves in bfloat16 (bf16 below).

struct ModelInput {
  int64_t params = 0;       // P trainable + buffer elements
  int64_t B = 0, N = 0, M = 0, I = 0, B_seq = 0;
  int64_t patch = 0;        // h = w
  int64_t chan = 1;
  int64_t D = 128;
  Mode mode = Mode::Lazy;
  int64_t side = 0;
  int64_t height = 0, width = 0;  // image (H, W) when known (eager holds B_seq whole images)
  int stages = 2;           // ResNet-18/34 stages kept
  int blocks_per_stage = 2;
  // Fraction of selection-pass patches actually encoded (the zero-patch
  // shortcut lowers it); 1 without shortcuts.
  double encoded_fraction = 1.0;
  int64_t feature_dim = 0;  // > 0: the "features" encoder
  bool recompute = true;    // ResNet::set_recompute (recompute_activations)
  bool bf16 = false;        // precision: bf16 with bfloat16 saved activations
  bool bf16_select = false; // the selection's convolutions in bf16, BatchNorm not folded: the stem chunked
};

int64_t conv_out(int64_t s, int64_t k, int64_t st, int64_t p) { return (s + 2 * p - k) / st + 1; }

struct ModelTerms {
  double state = 0;        // parameters + gradients + AdamW moments
  double saved = 0;        // activations kept for backward, B*M patches
  double train_peak = 0;   // state + saved + the backward transient + selected input
  double select_peak = 0;  // state + no-grad transient + resident batch (eager)
  double peak = 0;
};

// Per-patch element counts of a BasicBlock ResNet encoder (derivation in
// docs/memory_model.md; what each op keeps is read off engine/ops):
//   conv saves its input; training BatchNorm saves its input; ReLU saves its
//   output (shared with the next conv's saved input); max-pool saves int64
//   indices (2 floats each); add and the global average pool save nothing.
//   With recompute (the default), BatchNorm+ReLU is one op whose output is
//   recomputed in backward, so the next conv keeps nothing, and the stem conv
//   output is recomputed from the patch: the stem keeps only the pool's
//   output (the pool recomputes its argmax in backward), a block its conv1
//   output, conv2 output and output.
// saved: bytes kept for backward per patch (the patch itself included);
// nograd: the no-grad forward's largest moment per patch (input + conv1
// output + BatchNorm output); bwd: the backward transient per patch above the
// saved set (the gradient of the first stage's output, from the main branch
// and from the downsample of the next stage, while that block's tensors are
// still saved); stem: with recompute, the moment backward reaches the stem
// (the patch, the recomputed conv1 output, the ReLU output turned gradient
// and the BatchNorm's input gradient), a peak of its own.
void resnet_per_patch(const ModelInput& in, double* saved_bytes, double* nograd_bytes, double* bwd_transient,
                      double* stem_bytes) {
  const int64_t h = in.patch;
  const int64_t s1 = conv_out(h, 7, 2, 3);   // conv1
  const int64_t s2 = conv_out(s1, 3, 2, 1);  // maxpool
  const double a_in = static_cast<double>(in.chan * h * h);
  const double a1 = 64.0 * s1 * s1;
  const double a2 = 64.0 * s2 * s2;
  // conv1 input; [conv1 output (BN); ReLU output; max-pool indices;] max-pool
  // output (with recompute the pool keeps the ReLU output's recipe and
  // backward recomputes the argmax).
  double saved = a_in + (in.recompute ? 0.0 : 2 * a1 + 2 * a2) + a2;
  int64_t s = s2, c = 64;
  for (int st = 0; st < in.stages; ++st) {
    const int64_t c_out = 64 << st;
    const int64_t so = st == 0 ? s : conv_out(s, 3, 2, 1);
    const double map = static_cast<double>(c_out * so * so);
    for (int b = 0; b < in.blocks_per_stage; ++b) {
      // conv1 output (BN), [ReLU output (ReLU and conv2),] conv2 output (BN),
      // the block output (its ReLU, and the next conv); the downsample adds
      // its conv output (BN).
      saved += (in.recompute ? 3 : 4) * map;
      if (b == 0 && (st > 0 || c != c_out)) saved += map;
    }
    s = so;
    c = c_out;
  }
  // precision: bf16 keeps everything but the patch (a leaf) and the int64
  // pool indices in bfloat16; a convolution's backward hands its bfloat16
  // copy to the bf16 primitive as is, so the transient above is unchanged
  // (a BatchNorm still widens its input for its backward, a smaller moment).
  const double kept32 = a_in + (in.recompute ? 0.0 : 2 * a2);
  *saved_bytes = in.bf16 ? 4.0 * kept32 + 2.0 * (saved - kept32) : 4.0 * saved;
  // No-grad (the selection): the stem's conv output and BatchNorm+ReLU
  // output; with the selection's convolutions in bf16 the stem is chunked
  // (ops::conv_bn_relu_pool) and the peak moves to layer1's second conv: the
  // block's input (its identity), the conv's input, its bfloat16 copy, and
  // oneDNN's blocked output beside the plain one (4.5 maps of a2).
  *nograd_bytes = in.bf16_select ? 4.0 * (a_in + 4.5 * a2) : 4.0 * (a_in + 2 * a1);
  *bwd_transient = 4.0 * (2 * a2);
  // The stem's backward moment (recomputed conv1 output, ReLU output and the
  // incoming gradient, all float32) with the composed ops; under bf16 the stem
  // is one chunked op (ops::conv_bn_relu_pool) whose conv-sized maps exist for
  // one chunk only, so the term goes.
  *stem_bytes = in.recompute && !in.bf16 ? 4.0 * (a_in + 3 * a1) : 0.0;
}

ModelTerms memory_model(const ModelInput& in) {
  ModelTerms t;
  t.state = 4.0 * 4.0 * static_cast<double>(in.params);  // w, grad, exp_avg, exp_avg_sq
  const double BM = static_cast<double>(in.B * in.M);
  const double chunk = static_cast<double>(std::max(in.M, in.I));
  if (in.feature_dim > 0) {
    const double F = static_cast<double>(in.feature_dim), D = static_cast<double>(in.D);
    // Saved: LayerNorm input (the selected features themselves), Linear input
    // (= LN output), BN input, ReLU output.
    t.saved = 4.0 * BM * (2 * F + 2 * D);
    t.train_peak = t.state + t.saved;
    // No-grad: one chunk of features, the LN output and the embeddings.
    t.select_peak = t.state + 4.0 * static_cast<double>(in.B_seq) * chunk * (2 * F + 2 * D);
  } else {
    double saved_pp = 0, nograd_pp = 0, bwd_pp = 0, stem_pp = 0;
    resnet_per_patch(in, &saved_pp, &nograd_pp, &bwd_pp, &stem_pp);
    t.saved = BM * saved_pp;
    t.train_peak = t.state + BM * std::max(saved_pp + bwd_pp, stem_pp);
    const double hw = static_cast<double>(in.chan * in.patch * in.patch);
    const double seq = static_cast<double>(in.mode == Mode::EagerSeq ? 1 : in.B);
    double resident = 0;
    if (in.mode != Mode::Lazy) {
      // Eager loading holds the B_seq whole images (B_seq, C, H, W) as a
      // tensor and cuts patches from it; without the image size, the
      // (B_seq, N, C, h, w) patches of a grid without overlap.
      resident = in.height > 0 ? 4.0 * seq * static_cast<double>(in.chan * in.height * in.width)
                               : 4.0 * seq * static_cast<double>(in.N) * hw;
    }
    const double enc = std::max(1.0, std::ceil(seq * chunk * in.encoded_fraction));
    t.select_peak = t.state + resident + enc * nograd_pp;
  }
  t.peak = std::max(t.train_peak, t.select_peak);
  return t;
}

// ---------------------------------------------------------------------------
// Image runs through the trainer.

struct ImageRun {
  train::Config cfg;
  int64_t side = 1500;
  Mode mode = Mode::Lazy;
  bool fold_bn = false;
  int steps = 1;
  std::string label;
  std::string data_dir;  // an existing dataset (empty: generate a canvas set of `side`)
};

std::string bench_data_root() {
  const char* e = std::getenv("IPSNET_BENCH_DATA");
  return e ? e : "/tmp/ipsnet_bench_data";
}

// A small Megapixel MNIST (ips style) dataset of the given side, made once.
std::string ensure_dataset(int64_t side, int64_t n_images) {
  std::string dir = bench_data_root() + "/" + std::to_string(side) + "-n" + std::to_string(n_images);
  if (fs::exists(dir + "/parameters.json")) return dir;
  fs::create_directories(bench_data_root());
  data::MegapixelOptions o = data::default_options("ips");
  o.width = side;
  o.height = side;
  o.n_train = n_images;
  o.n_test = 1;
  std::fprintf(stderr, "ips_memory: generating %lld images of %lldx%lld into %s\n",
               static_cast<long long>(n_images), static_cast<long long>(side), static_cast<long long>(side),
               dir.c_str());
  data::generate_dataset(o, data::find_digit_source("", "mnist"), dir, true);
  return dir;
}

train::Config official_config() {
  train::Config c;  // the defaults are the reference mnist config
  c.tasks = train::default_mnist_tasks();
  c.device = "cpu";
  return c;
}

void count_params(Module& m, int64_t* n) {
  for (const auto& p : m.named_parameters()) *n += p.second.numel();
}

void run_image(benchmark::State& state, ImageRun run) {
  train::Config cfg = run.cfg;
  const int64_t B = cfg.B;
  cfg.data_dir = run.data_dir.empty() ? ensure_dataset(run.side, std::max<int64_t>(B, 16)) : run.data_dir;
  cfg.out_dir = "/tmp/ipsnet_bench_runs";
  static int run_counter = 0;
  cfg.run_name = "ips_memory-" + std::to_string(::getpid()) + "-" + std::to_string(run_counter++);
  cfg.N = 0;
  cfg.eager = run.mode != Mode::Lazy;
  cfg.B_seq = run.mode == Mode::EagerSeq ? 1 : B;
  // Reserved memory reflects this run, not what earlier runs left in the arena.
  get_allocator(Device::cpu()).empty_cache();
  train::Trainer trainer(cfg, true);
  IPSNet& net = dynamic_cast<train::IPSMethod&>(trainer.method()).net();
  auto* resnet = dynamic_cast<ResNet*>(net.encoder_.get());
  if (resnet) resnet->set_fold_bn(run.fold_bn);
  const Device dev = trainer.device();
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < B; ++i) ids.push_back(i);
  trainer.train_step(ids);  // warm-up (not measured)

  // Fraction of patches the selection encodes (for the model).
  double enc_frac = 1.0;
  if (cfg.dedup_patches) {
    train::Attention r = trainer.attend("train", ids, false);
    enc_frac = static_cast<double>(r.n_encoded) / static_cast<double>(B * trainer.config().N);
  }
  reset_peak_memory(dev);
  reset_peak_rss();
  double seconds = 0, cpu_seconds = 0;
  int64_t steps = 0;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    const double c0 = process_cpu_seconds();
    trainer.train_step(ids);
    backend_for(dev).synchronize();  // a GPU step ends when its kernels have (SPEC section 4)
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    cpu_seconds += process_cpu_seconds() - c0;
    state.SetIterationTime(s);
    seconds += s;
    ++steps;
  }
  MemoryStats ms = memory_stats(dev);
  ModelInput mi;
  count_params(net, &mi.params);
  mi.B = B;
  mi.N = trainer.config().N;
  mi.M = cfg.M;
  mi.I = cfg.I;
  mi.B_seq = cfg.B_seq;
  mi.patch = cfg.patch_size;
  mi.chan = cfg.n_chan_in;
  mi.D = cfg.D;
  mi.mode = run.mode;
  mi.side = run.side;
  {
    const PatchGrid g = trainer.source("train").grid(ids[0]);
    mi.height = g.height;
    mi.width = g.width;
  }
  mi.stages = static_cast<int>(cfg.n_res_blocks);
  mi.blocks_per_stage = cfg.enc_type == "resnet34" ? 3 : 2;
  mi.encoded_fraction = enc_frac;
  mi.recompute = cfg.recompute_activations;
  mi.bf16 = cfg.precision == "bf16" && dev.is_cpu() && backend_for(dev).supports_bf16_conv();
  mi.bf16_select = (cfg.precision == "bf16" || cfg.selection_bf16) && !run.fold_bn &&
                   backend_for(dev).supports_bf16_conv();
  ModelTerms mt = memory_model(mi);
  const double measured = static_cast<double>(ms.peak_allocated_bytes);
  state.counters["peak_alloc"] = measured;
  state.counters["peak_reserved"] = static_cast<double>(ms.peak_reserved_bytes);
  state.counters["peak_rss"] = static_cast<double>(peak_rss_bytes());
  state.counters["model_peak"] = mt.peak;
  state.counters["model_saved"] = mt.saved;
  state.counters["model_err"] = mt.peak / measured - 1.0;
  state.counters["s_per_step"] = seconds / static_cast<double>(std::max<int64_t>(1, steps));
  state.counters["cpu_s_per_step"] = cpu_seconds / static_cast<double>(std::max<int64_t>(1, steps));
  state.counters["img_per_s"] = static_cast<double>(B * steps) / std::max(seconds, 1e-9);
  state.counters["N"] = static_cast<double>(mi.N);
  state.counters["M"] = static_cast<double>(cfg.M);
  state.counters["I"] = static_cast<double>(cfg.I);
  state.counters["B"] = static_cast<double>(B);
  state.counters["patch"] = static_cast<double>(cfg.patch_size);
  state.counters["side"] = static_cast<double>(run.side);
  state.counters["H"] = static_cast<double>(mi.height);
  state.counters["W"] = static_cast<double>(mi.width);
  state.counters["C"] = static_cast<double>(mi.chan);
  state.counters["mode"] = static_cast<double>(static_cast<int>(run.mode));
  state.counters["dedup"] = cfg.dedup_patches ? 1 : 0;
  state.counters["fold_bn"] = run.fold_bn ? 1 : 0;
  state.counters["enc_frac"] = enc_frac;
  state.counters["threads"] = static_cast<double>(num_threads());
  state.SetLabel(std::string(mode_name(run.mode)) + " " + dev.str());
  std::error_code ec;
  fs::remove_all(trainer.run_dir(), ec);  // the run directory holds only config.yaml
  std::fprintf(stderr,
               "ips_memory: %s %lldx%lldx%lld N=%lld M=%lld I=%lld B=%lld patch=%lld dedup=%d fold=%d: %.3f s/step, "
               "%.2f img/s, "
               "peak alloc %.1f MiB (model %.1f MiB, %+.1f%%), reserved %.1f MiB, rss %.1f MiB\n",
               mode_name(run.mode), static_cast<long long>(mi.chan), static_cast<long long>(mi.height),
               static_cast<long long>(mi.width), static_cast<long long>(mi.N), static_cast<long long>(cfg.M),
               static_cast<long long>(cfg.I), static_cast<long long>(B), static_cast<long long>(cfg.patch_size),
               cfg.dedup_patches ? 1 : 0, run.fold_bn ? 1 : 0, seconds / std::max<int64_t>(1, steps),
               static_cast<double>(B * steps) / std::max(seconds, 1e-9), measured / kMiB, mt.peak / kMiB,
               100.0 * (mt.peak / measured - 1.0), static_cast<double>(ms.peak_reserved_bytes) / kMiB,
               static_cast<double>(peak_rss_bytes()) / kMiB);
}

// ---------------------------------------------------------------------------
// Feature bags (CAMELYON-like, SPEC section 7): F-dim features made on demand
// from a hash of (image, patch), so host memory does not grow with N.

class SyntheticFeatures : public PatchSource {
 public:
  SyntheticFeatures(int64_t B, int64_t N, int64_t F, uint64_t seed, Device device)
      : B_(B), N_(N), F_(F), device_(device) {
    Generator g(seed);
    protos_ = Tensor::randn({kProtos, F}, g).to_vector<float>();  // (kProtos, F)
  }
  int64_t batch() const override { return B_; }
  int64_t num_patches() const override { return N_; }
  // -> (n, F): a mix of two prototypes chosen and weighted by the hash.
  Tensor get(const std::vector<int64_t>& image, const std::vector<int64_t>& patch) override {
    const int64_t n = static_cast<int64_t>(image.size());
    Tensor out = Tensor::empty({n, F_});
    float* o = out.data<float>();
    for (int64_t i = 0; i < n; ++i) {
      uint64_t h = mix(static_cast<uint64_t>(image[static_cast<size_t>(i)]) * 0x100000001B3ull +
                       static_cast<uint64_t>(patch[static_cast<size_t>(i)]));
      const float* a = protos_.data() + (h % kProtos) * F_;
      const float* b = protos_.data() + ((h >> 16) % kProtos) * F_;
      const float w = static_cast<float>((h >> 40) & 0xFFFF) / 65535.0f;
      float* row = o + i * F_;
      for (int64_t f = 0; f < F_; ++f) row[f] = w * a[f] + (1.0f - w) * b[f];
    }
    return device_.is_cpu() ? out : out.to(device_);
  }

 private:
  static constexpr int64_t kProtos = 64;
  static uint64_t mix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
  }
  int64_t B_, N_, F_;
  Device device_;
  std::vector<float> protos_;  // (kProtos, F)
};

struct FeatureRun {
  int64_t N = 25000, M = 5000, I = 5000, B = 1, F = 2048;
  int64_t D = 512;
  std::string device = "cpu";
  int steps = 1;
};

void run_features(benchmark::State& state, FeatureRun run) {
  const Device dev = resolve_device(run.device);
  get_allocator(Device::cpu()).empty_cache();  // reserved reflects this run
  IPSNetOptions o;
  o.encoder("features").n_features(run.F);
  o.transformer(AggregatorOptions().n_token(1).H(8).D(run.D).D_k(64).D_v(64).D_inner(4 * run.D).attn_dropout(0.1).dropout(
      0.1));
  TaskSpec t;
  t.name = "metastases";
  t.n_class = 1;
  t.act = TaskActivation::Sigmoid;
  o.tasks({t});
  Generator init(1), drop(2), sel(3);
  IPSNet net(o, init, &drop);
  if (dev.is_cuda()) net.to(dev);
  std::vector<std::pair<std::string, Tensor>> params;
  for (const auto& p : net.named_parameters()) params.emplace_back(p.first, p.second);
  AdamWOptions ao;
  ao.lr = 3e-4;
  ao.weight_decay = 0.1;
  AdamW opt(params, ao);
  IPSOptions ipo;
  ipo.M = run.M;
  ipo.I = run.I;
  // One step: B_seq = 1 selection per image (bags), then the training pass.
  auto step = [&]() {
    std::vector<Tensor> selected;
    for (int64_t b = 0; b < run.B; ++b) {
      SyntheticFeatures src(1, run.N, run.F, 100 + static_cast<uint64_t>(b), dev);
      SelectionResult r = ips_select(net, src, ipo, sel);
      std::vector<int64_t> img(static_cast<size_t>(r.idx.numel()), 0);
      selected.push_back(src.get(img, r.idx.to_vector<int64_t>()));
    }
    Tensor x = ops::cat(selected, 0);  // (B*M, F)
    selected.clear();
    net.train();
    opt.zero_grad();
    const int64_t m = std::min(run.M, run.N);
    Tensor emb = net.encode(x).reshape({run.B, m, run.D});
    x = Tensor();
    std::map<std::string, Tensor> logits = net.heads(net.aggregate(emb));
    std::vector<float> y(static_cast<size_t>(run.B));
    for (int64_t b = 0; b < run.B; ++b) y[static_cast<size_t>(b)] = static_cast<float>(b % 2);
    Tensor target = Tensor::from_vector(y, {run.B, 1}, dev);
    Tensor loss = net.task_loss(t, logits.at("metastases"), target);
    loss.backward();
    opt.step(3e-4);
  };
  step();  // warm-up
  reset_peak_memory(dev);
  reset_peak_rss();
  double seconds = 0;
  int64_t steps = 0;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    step();
    backend_for(dev).synchronize();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.SetIterationTime(s);
    seconds += s;
    ++steps;
  }
  MemoryStats ms = memory_stats(dev);
  ModelInput mi;
  count_params(net, &mi.params);
  mi.B = run.B;
  mi.N = run.N;
  mi.M = std::min(run.M, run.N);
  mi.I = run.I;
  mi.B_seq = 1;
  mi.D = run.D;
  mi.feature_dim = run.F;
  ModelTerms mt = memory_model(mi);
  const double measured = static_cast<double>(ms.peak_allocated_bytes);
  state.counters["peak_alloc"] = measured;
  state.counters["peak_reserved"] = static_cast<double>(ms.peak_reserved_bytes);
  state.counters["peak_rss"] = static_cast<double>(peak_rss_bytes());
  state.counters["model_peak"] = mt.peak;
  state.counters["model_err"] = mt.peak / measured - 1.0;
  state.counters["s_per_step"] = seconds / static_cast<double>(std::max<int64_t>(1, steps));
  state.counters["img_per_s"] = static_cast<double>(run.B * steps) / std::max(seconds, 1e-9);
  state.counters["N"] = static_cast<double>(run.N);
  state.counters["M"] = static_cast<double>(run.M);
  state.counters["I"] = static_cast<double>(run.I);
  state.counters["B"] = static_cast<double>(run.B);
  state.counters["F"] = static_cast<double>(run.F);
  state.counters["mode"] = 0;
  state.counters["threads"] = static_cast<double>(num_threads());
  state.SetLabel("features lazy " + dev.str());
  std::fprintf(stderr,
               "ips_memory: features N=%lld M=%lld I=%lld B=%lld F=%lld: %.3f s/step, peak alloc %.1f MiB "
               "(model %.1f MiB, %+.1f%%), rss %.1f MiB\n",
               static_cast<long long>(run.N), static_cast<long long>(run.M), static_cast<long long>(run.I),
               static_cast<long long>(run.B), static_cast<long long>(run.F),
               seconds / std::max<int64_t>(1, steps), measured / kMiB, mt.peak / kMiB,
               100.0 * (mt.peak / measured - 1.0), static_cast<double>(peak_rss_bytes()) / kMiB);
}

// ---------------------------------------------------------------------------

void register_image(const std::string& sweep, ImageRun run) {
  const train::Config& c = run.cfg;
  std::ostringstream name;
  name << sweep << "/" << mode_name(run.mode);
  if (run.data_dir.empty())
    name << "/side:" << run.side;
  else
    name << "/stride:" << c.patch_stride;
  name << "/M:" << c.M << "/I:" << c.I
       << "/B:" << c.B << "/patch:" << c.patch_size << "/dedup:" << (c.dedup_patches ? 1 : 0)
       << "/fold:" << (run.fold_bn ? 1 : 0) << "/" << c.device;
  const int steps = run.steps;
  benchmark::RegisterBenchmark(name.str().c_str(), [run](benchmark::State& s) { run_image(s, run); })
      ->UseManualTime()
      ->Iterations(steps)
      ->Unit(benchmark::kSecond);
}

void register_features(FeatureRun run) {
  std::ostringstream name;
  name << "features/N:" << run.N << "/M:" << run.M << "/I:" << run.I << "/B:" << run.B << "/F:" << run.F << "/"
       << run.device;
  const int steps = run.steps;
  benchmark::RegisterBenchmark(name.str().c_str(), [run](benchmark::State& s) { run_features(s, run); })
      ->UseManualTime()
      ->Iterations(steps)
      ->Unit(benchmark::kSecond);
}

ImageRun base_run(bool shortcuts) {
  ImageRun r;
  r.cfg = official_config();
  r.cfg.dedup_patches = shortcuts;
  r.fold_bn = shortcuts;
  return r;
}

void register_sweeps() {
  std::vector<std::string> devices = {"cpu"};
  if (probe_devices().count > 0) devices.push_back("cuda");
  for (const std::string& dev : devices) {
    // Official config, shortcuts off / zero-dedup only / both.
    for (int s = 0; s < 3; ++s) {
      ImageRun r = base_run(s > 0);
      r.fold_bn = s == 2;
      r.cfg.device = dev;
      r.steps = 2;
      register_image("official", r);
    }
    // Image side (N = 900 .. 14,400) x loading mode.
    for (Mode m : {Mode::Lazy, Mode::Eager, Mode::EagerSeq})
      for (int64_t side : {1500, 3000, 4500, 6000}) {
        ImageRun r = base_run(true);
        r.cfg.device = dev;
        r.side = side;
        r.mode = m;
        register_image("side", r);
      }
    for (int64_t M : {25, 50, 100, 200}) {
      ImageRun r = base_run(true);
      r.cfg.device = dev;
      r.cfg.M = M;
      register_image("M", r);
    }
    for (int64_t I : {25, 50, 200, 400}) {
      ImageRun r = base_run(true);
      r.cfg.device = dev;
      r.cfg.I = I;
      register_image("I", r);
    }
    for (int64_t B : {4, 8, 32}) {
      ImageRun r = base_run(true);
      r.cfg.device = dev;
      r.cfg.B = B;
      r.cfg.B_seq = B;
      register_image("B", r);
    }
    for (int64_t p : {25, 100}) {
      ImageRun r = base_run(true);
      r.cfg.device = dev;
      r.cfg.patch_size = p;
      r.cfg.patch_stride = p;
      r.cfg.M = std::min<int64_t>(100, (1500 / p) * (1500 / p));
      register_image("patch", r);
    }
    for (int64_t N : {25000, 100000, 250000}) {
      FeatureRun f;
      f.N = N;
      f.device = dev;
      register_features(f);
    }
  }
}

// --photos DIR: RGB photographs (any size; 1200 x 1600 for the traffic task),
// a reduced traffic config small enough for a 2-core CPU.
ImageRun photo_run(const std::string& dir, int steps) {
  ImageRun r;
  r.data_dir = dir;
  r.steps = steps;
  train::Config& c = r.cfg;
  c.device = "cpu";
  c.n_chan_in = 3;
  c.normalize = "imagenet";
  c.patch_size = c.patch_stride = 100;
  c.B = c.B_seq = 2;
  c.M = 4;
  c.I = 32;
  c.D = 128;
  c.H = 8;
  c.D_k = c.D_v = 16;
  c.D_inner = 512;
  c.enc_type = "resnet18";
  c.n_res_blocks = 2;
  c.use_pos = false;
  c.n_token = 1;
  c.shuffle = true;
  // One task: the dataset's first label, its classes.
  std::unique_ptr<data::DataSource> src = data::open_source(dir, "train", data::SourceOptions{100, 100});
  IPSNET_CHECK(src->has_pixels() && src->channels() == 3, "--photos: '", dir, "' does not hold RGB images");
  const data::LabelSpec l = src->labels().at(0);
  train::TaskConfig t;
  t.id = 0;
  t.name = l.name;
  t.n_class = l.n_class;
  t.act_fn = "softmax";
  t.metric = "accuracy";
  c.tasks = {t};
  return r;
}

void register_photo_sweeps(const std::string& dir, int steps) {
  for (int64_t stride : {100, 50, 33})
    for (Mode m : {Mode::Lazy, Mode::Eager}) {
      ImageRun r = photo_run(dir, steps);
      r.cfg.patch_stride = stride;
      r.mode = m;
      register_image("photos_N", r);
    }
  for (int64_t M : {2, 8, 16}) {
    ImageRun r = photo_run(dir, steps);
    r.cfg.M = M;
    register_image("photos_M", r);
  }
  for (int64_t I : {8, 64, 192}) {
    ImageRun r = photo_run(dir, steps);
    r.cfg.I = I;
    register_image("photos_I", r);
  }
  for (int64_t B : {1, 4})
    for (Mode m : {Mode::Lazy, Mode::Eager}) {
      ImageRun r = photo_run(dir, steps);
      r.cfg.B = r.cfg.B_seq = B;
      r.mode = m;
      register_image("photos_B", r);
    }
}

// --decode DIR: the photo source's decoding alone, CPU time of this thread
// (robust to a loaded machine) per image and pass over its N patches of 100
// (stride 100): the whole image (eager), lazy chunks of I in index order, lazy
// chunks of I in a shuffled order (the reference's visiting order), and the M
// selected patches read again for the training pass.
double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

void decode_benchmark(const std::string& dir, int64_t I, int64_t M, int passes, bool augment) {
  data::SourceOptions so;
  if (augment) {  // the traffic config's training augmentation
    so.jitter = 0.1;
    so.translate = 100;
    so.augment_seed = 3;
  }
  so.patch_size = so.patch_stride = 100;
  so.normalize = "imagenet";
  std::unique_ptr<data::DataSource> probe = data::open_source(dir, "train", so);
  const int64_t n_img = std::min<int64_t>(probe->size(), 4);
  const PatchGrid g = probe->grid(0);
  const int64_t N = g.count(), C = probe->channels();
  std::vector<float> whole(static_cast<size_t>(C * g.height * g.width));
  std::vector<float> patches(static_cast<size_t>(N * C * 100 * 100));
  Generator gen(7);
  const char* names[4] = {"eager (whole image)", "lazy, index order", "lazy, shuffled order", "lazy, M selected"};
  double secs[4] = {0, 0, 0, 0};
  int64_t decoders[4] = {0, 0, 0, 0};
  for (int kind = 0; kind < 4; ++kind) {
    std::unique_ptr<data::DataSource> src = data::open_source(dir, "train", so);
    auto* ps = dynamic_cast<data::PhotoSource*>(src.get());
    IPSNET_CHECK(ps != nullptr, "--decode: '", dir, "' is not a photo dataset");
    for (int pass = 0; pass < passes; ++pass)
      for (int64_t i = 0; i < n_img; ++i) {
        std::vector<int64_t> order(static_cast<size_t>(N));
        for (int64_t p = 0; p < N; ++p) order[static_cast<size_t>(p)] = p;
        if (kind >= 2) {
          order = gen.permutation(N);
        }
        const double t0 = thread_cpu_seconds();
        if (kind == 0) {
          src->read_image(i, whole.data());
        } else if (kind == 3) {
          std::vector<int64_t> sel(order.begin(), order.begin() + std::min(M, N));
          std::sort(sel.begin(), sel.end());
          src->read_instances(i, sel.data(), static_cast<int64_t>(sel.size()), patches.data());
        } else {
          for (int64_t s0 = 0; s0 < N; s0 += I) {
            const int64_t n = std::min(I, N - s0);
            src->read_instances(i, order.data() + s0, n, patches.data());
          }
        }
        secs[kind] += thread_cpu_seconds() - t0;
      }
    decoders[kind] = ps->decoders_opened();
  }
  const double per = 1000.0 / static_cast<double>(n_img * passes);
  std::printf("decode%s: %lld images of %lldx%lldx%lld, N %lld, I %lld, M %lld, %d passes; CPU ms per image and "
              "pass (this thread)\n",
              augment ? " with augmentation (jitter 0.1, translate 100)" : "",
              static_cast<long long>(n_img), static_cast<long long>(C), static_cast<long long>(g.height),
              static_cast<long long>(g.width), static_cast<long long>(N), static_cast<long long>(I),
              static_cast<long long>(M), passes);
  for (int k = 0; k < 4; ++k)
    std::printf("  %-22s %8.1f ms  (x%.2f of eager)  decoders opened per image and pass %.2f\n", names[k],
                secs[k] * per, secs[k] / secs[0], static_cast<double>(decoders[k]) * per / 1000.0);
}

// --probe P: the encoder's training-pass memory for P patches of the official
// config, phase by phase (used to check the model's per-patch terms).
void probe_encoder(int64_t n, int64_t patch) {
  Generator g(1);
  ResNet net(ResNetOptions().depth(18).in_channels(1).n_res_blocks(2), g);
  Tensor x = Tensor::rand({n, 1, patch, patch}, g);  // (n, 1, h, w)
  net.train();
  double nograd = 0;
  const bool have_bf16 = backend_for(Device::cpu()).supports_bf16_conv();
  for (int variant = 0; variant < (have_bf16 ? 3 : 2); ++variant) {
    // float32 without and with recomputation; precision: bf16 with it.
    const bool recompute = variant > 0, bf16 = variant == 2;
    net.set_recompute(recompute);
    net.zero_grad();
    const double base = static_cast<double>(memory_stats().allocated_bytes);
    reset_peak_memory();
    Tensor y;
    {
      PrecisionGuard precision(bf16);
      y = net.forward(x);
    }
    MemoryStats f = memory_stats();
    Tensor loss = ops::sum(y);
    y = Tensor();
    reset_peak_memory();
    loss.backward();
    MemoryStats b = memory_stats();
    ModelInput mi;
    mi.patch = patch;
    mi.recompute = recompute;
    mi.bf16 = bf16;
    double saved = 0, bwd = 0, stem = 0;
    resnet_per_patch(mi, &saved, &nograd, &bwd, &stem);
    const double kib = 1024.0 * static_cast<double>(n);
    std::printf("probe %lld patches of %lld, recompute %s%s: after forward %.1f KiB/patch (model saved %.1f), forward "
                "peak %.1f KiB/patch, backward peak %.1f KiB/patch (model %.1f)\n",
                static_cast<long long>(n), static_cast<long long>(patch), recompute ? "on" : "off",
                bf16 ? ", precision bf16" : "",
                (static_cast<double>(f.allocated_bytes) - base) / kib, saved / 1024.0,
                (static_cast<double>(f.peak_allocated_bytes) - base) / kib,
                (static_cast<double>(b.peak_allocated_bytes) - base) / kib, std::max(saved + bwd, stem) / 1024.0);
  }
  {
    // Stem op by op: bytes held after each (KiB per patch).
    Tensor xg = x;
    double b0 = static_cast<double>(memory_stats().allocated_bytes);
    auto held = [&]() { return (static_cast<double>(memory_stats().allocated_bytes) - b0) / 1024.0 / double(n); };
    Tensor c1 = net.conv1_->forward(xg);
    double h1 = held();
    Tensor r1 = ops::relu(net.bn1_->forward(c1));
    double h2 = held();
    Tensor p1 = ops::max_pool2d(r1, {3, 3}, {2, 2}, {1, 1});
    double h3 = held();
    Tensor l1 = net.layers_[0]->forward(p1);
    double h4 = held();
    std::printf("probe stem, plain ops (no recomputation): conv1 %.1f, +bn+relu %.1f, +maxpool %.1f, +layer1 %.1f "
                "KiB/patch\n",
                h1, h2, h3, h4);
  }
  NoGradGuard ng;
  net.eval();

  reset_peak_memory();
  const double base2 = static_cast<double>(memory_stats().allocated_bytes);
  Tensor e = net.forward(x);
  std::printf("probe no-grad eval forward peak %.1f KiB/patch (model %.1f)\n",
              (static_cast<double>(memory_stats().peak_allocated_bytes) - base2) / 1024.0 / static_cast<double>(n),
              nograd / 1024.0);
  if (have_bf16) {
    // The selection's bf16 convolutions (ConvBf16Guard): the stem is chunked.
    e = Tensor();
    reset_peak_memory();
    const double base3 = static_cast<double>(memory_stats().allocated_bytes);
    ConvBf16Guard bf16(true);
    e = net.forward(x);
    ModelInput mi;
    mi.patch = patch;
    mi.bf16_select = true;
    double saved = 0, nograd_bf16 = 0, bwd = 0, stem = 0;
    resnet_per_patch(mi, &saved, &nograd_bf16, &bwd, &stem);
    std::printf("probe no-grad eval forward, bf16 convolutions: peak %.1f KiB/patch (model %.1f)\n",
                (static_cast<double>(memory_stats().peak_allocated_bytes) - base3) / 1024.0 / static_cast<double>(n),
                nograd_bf16 / 1024.0);
  }
}

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--config FILE.yaml] [--set key=value]... [--side S | --data DIR] [--mode lazy|eager|eager_seq]\n"
               "          [--device cpu|cuda[:N]] [--shortcuts on|off] [--fold-bn on|off] [--steps K]\n"
               "          [--features N [--F 2048] [--M 5000] [--I 5000] [--B 1] [--D 512]]\n"
               "          [--photos DIR (the RGB photograph sweeps on an imported dataset)]\n"
               "          [--I 32 --M 10 --steps K --decode DIR (photo decoding alone: eager, lazy, shuffled)]\n"
               "          [google benchmark flags, e.g. --benchmark_out=r.json --benchmark_out_format=json]\n"
               "Without --config/--set/--features: the sweeps (filter them with --benchmark_filter).\n",
               argv0);
  return 2;
}

bool on_off(const std::string& v) {
  IPSNET_CHECK(v == "on" || v == "off" || v == "1" || v == "0" || v == "true" || v == "false",
               "expected on|off, got '", v, "'");
  return v == "on" || v == "1" || v == "true";
}

}  // namespace
}  // namespace ipsnet

int main(int argc, char** argv) {
  using namespace ipsnet;
  try {
    std::vector<char*> rest = {argv[0]};
    std::string config_path, mode, data_dir, photos_dir;
    std::vector<std::string> sets;
    int64_t side = 0, features = 0;
    int steps = 3;
    int shortcuts = -1, fold = -1;
    FeatureRun fr;
    bool single = false;
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto value = [&](const std::string& flag) -> std::string {
        if (a.rfind(flag + "=", 0) == 0) return a.substr(flag.size() + 1);
        IPSNET_CHECK(i + 1 < argc, flag, " needs a value");
        return argv[++i];
      };
      auto is = [&](const std::string& flag) { return a == flag || a.rfind(flag + "=", 0) == 0; };
      if (a == "--help" || a == "-h") return usage(argv[0]);
      if (is("--config")) config_path = value("--config"), single = true;
      else if (is("--set")) sets.push_back(value("--set")), single = true;
      else if (is("--device")) sets.push_back("device=" + value("--device")), single = true;
      else if (is("--side")) side = std::stoll(value("--side")), single = true;
      else if (is("--mode")) mode = value("--mode"), single = true;
      else if (is("--shortcuts")) shortcuts = on_off(value("--shortcuts")), single = true;
      else if (is("--fold-bn")) fold = on_off(value("--fold-bn")), single = true;
      else if (is("--steps")) steps = std::stoi(value("--steps"));
      else if (is("--data")) data_dir = value("--data"), single = true;
      else if (is("--photos")) photos_dir = value("--photos");
      else if (is("--decode")) {
        const std::string dir = value("--decode");
        for (bool aug : {false, true})
          decode_benchmark(dir, fr.I == 5000 ? 32 : fr.I, fr.M == 5000 ? 10 : fr.M, std::max(1, steps), aug);
        return 0;
      }
      else if (is("--features")) features = std::stoll(value("--features"));
      else if (is("--F")) fr.F = std::stoll(value("--F"));
      else if (is("--M")) fr.M = std::stoll(value("--M"));
      else if (is("--I")) fr.I = std::stoll(value("--I"));
      else if (is("--B")) fr.B = std::stoll(value("--B"));
      else if (is("--D")) fr.D = std::stoll(value("--D"));
      else if (is("--probe")) {
        probe_encoder(std::stoll(value("--probe")), 50);
        return 0;
      }
      else rest.push_back(argv[i]);
    }
    if (!photos_dir.empty()) {
      register_photo_sweeps(photos_dir, steps);
    } else if (features > 0) {
      fr.N = features;
      fr.steps = steps;
      register_features(fr);
    } else if (single) {
      ImageRun r;
      r.cfg = config_path.empty() ? official_config() : train::load_config(config_path);
      if (r.cfg.tasks.empty()) r.cfg.tasks = train::default_mnist_tasks();
      for (const std::string& s : sets) train::apply_override(r.cfg, s);
      if (!r.cfg.given.count("device")) r.cfg.device = "cpu";
      // Loading mode: --mode, else the config's eager / B_seq keys.
      if (mode.empty()) mode = !r.cfg.eager ? "lazy" : r.cfg.B_seq < r.cfg.B ? "eager_seq" : "eager";
      IPSNET_CHECK(mode == "lazy" || mode == "eager" || mode == "eager_seq", "--mode: lazy, eager or eager_seq, got '",
                   mode, "'");
      r.mode = mode == "lazy" ? Mode::Lazy : mode == "eager" ? Mode::Eager : Mode::EagerSeq;
      // Image side: --side, else the N of the config with its patch size (square).
      const int64_t n_side = r.cfg.N > 0 ? static_cast<int64_t>(std::llround(std::sqrt(double(r.cfg.N)))) : 30;
      r.side = side > 0 ? side : (n_side - 1) * r.cfg.patch_stride + r.cfg.patch_size;
      if (shortcuts >= 0) r.cfg.dedup_patches = shortcuts == 1;
      r.fold_bn = fold >= 0 ? fold == 1 : shortcuts == 1;
      r.steps = steps;
      r.data_dir = data_dir;
      register_image("config", r);
    } else {
      register_sweeps();
    }
    int n = static_cast<int>(rest.size());
    benchmark::Initialize(&n, rest.data());
    if (benchmark::ReportUnrecognizedArguments(n, rest.data())) return 2;
    std::fprintf(stderr, "ips_memory: %d threads, %s\n", num_threads(), memory_stats().str().c_str());
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ips_memory: error: %s\n", e.what());
    return 1;
  }
  return 0;
}

#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <iomanip>
#include <sstream>

#include "engine/backend/device_select.h"
#include "engine/common/files.h"
#include "engine/dist/comm.h"
#include "layers/mode_guard.h"
#include "models/safetensors.h"
#include "train/metrics.h"
#include "train/progress.h"

namespace ipsnet {
namespace train {

namespace fs = std::filesystem;

std::atomic<bool>& interrupt_flag() {
  static std::atomic<bool> flag{false};
  return flag;
}

double Schedule::at(int64_t step) const {
  if (kind == "cosine") return warmup_cosine_lr(lr, step, warmup_steps, total_steps);
  if (warmup_steps > 0 && step < warmup_steps)
    return lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  if (kind == "constant") return lr;
  IPSNET_CHECK(kind == "step", "learning-rate schedule '", kind, "': expected cosine, constant or step");
  const int64_t epoch = step / std::max<int64_t>(1, steps_per_epoch);
  double r = lr;
  for (int64_t e : decrease_at)
    if (epoch >= e) r *= 0.1;
  return r;
}

namespace {

// Independent random streams derived from (seed, purpose, counter): every
// draw of a step depends only on the seed and the step number, which makes
// resuming exact without saving generator states.
enum Purpose : uint64_t {
  kInit = 1, kEpochOrder = 2, kSelect = 3, kDropout = 4, kEvalSelect = 5, kAugment = 6, kProxy = 7
};
uint64_t derive_seed(int64_t seed, Purpose p) {
  uint64_t x = static_cast<uint64_t>(seed) * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(p) * 0xBF58476D1CE4E5B9ull;
  x ^= x >> 31;
  return x;
}

std::string fmt(double v, int prec = 4) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(prec) << v;
  return os.str();
}

std::string timestamp() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y%m%d-%H%M%S", std::localtime(&t));
  return buf;
}

double elapsed_ms(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace

Trainer::Trainer(Config cfg, bool quiet) : cfg_(std::move(cfg)), quiet_(quiet) { setup(true); }

void Trainer::open_data(bool eval_only) {
  IPSNET_CHECK(!cfg_.data_dir.empty(), "config key 'data_dir' is empty: give the dataset directory made by "
                                       "`ipsnet generate-data` (or --set data_dir=DIR)");
  IPSNET_CHECK(fs::is_directory(cfg_.data_dir), "config key 'data_dir': '", cfg_.data_dir,
               "' is not a directory (make one with `ipsnet generate-data`)");
  data::SourceOptions so;
  so.patch_size = cfg_.patch_size;
  so.patch_stride = cfg_.patch_stride;
  so.normalize = cfg_.normalize;
  // Evaluation opens only the split it evaluates (a directory may hold only test.npy's split).
  // Augmentation for the training split only (evaluation reads it as stored).
  data::SourceOptions train_so = so;
  train_so.jitter = cfg_.augment_jitter;
  train_so.translate = cfg_.augment_translate;
  train_so.augment_seed = derive_seed(cfg_.seed, kAugment);
  if (!eval_only || cfg_.eval_split == "train")
    train_source_ = data::open_source(cfg_.data_dir, "train", eval_only ? so : train_so);
  if (!eval_only || cfg_.eval_split != "train") eval_source_ = data::open_source(cfg_.data_dir, cfg_.eval_split, so);
  const data::DataSource& first = train_source_ ? *train_source_ : *eval_source_;
  check_tasks(first, cfg_.tasks);
  if (first.size() > 0) {
    const int64_t N = first.num_instances(0);
    if (first.has_pixels()) {
      const PatchGrid g = first.grid(0);
      IPSNET_CHECK(cfg_.N == 0 || cfg_.N == N, "config key 'N': ", cfg_.N, " but a ", g.height, "x", g.width,
                   " image in patches of ", cfg_.patch_size, " with stride ", cfg_.patch_stride, " has N = ", N);
    }
    IPSNET_CHECK(cfg_.M <= N, "config key 'M': ", cfg_.M, " is larger than N = ", N,
                 " (memory buffer bigger than the patches of an image)");
    cfg_.N = N;
  }
  if (train_source_) {
    n_train_ = cfg_.max_train > 0 ? std::min(cfg_.max_train, train_source_->size()) : train_source_->size();
    IPSNET_CHECK(n_train_ >= 1, "the training split of '", cfg_.data_dir, "' has no images");
    n_base_ = n_train_;
  }
  if (eval_source_)
    n_eval_ = cfg_.max_test > 0 ? std::min(cfg_.max_test, eval_source_->size()) : eval_source_->size();
}

void Trainer::setup(bool create_run_dir, bool eval_only) {
  validate(cfg_);
  // Data-parallel runs (docs/distributed.md): rank 0 alone prints and writes;
  // every rank must run the same configuration (device and threads may differ).
  dp_ = std::make_unique<DataParallel>();
  if (!dp_->writer()) quiet_ = true;
  if (dp_->active()) {
    Config same = cfg_;
    same.device.clear();
    same.threads = 0;
    dp_->check_start(cfg_.B, to_yaml(same));
    // One GPU per rank: a device given without an index is this rank's local GPU.
    if (cfg_.device == "cuda" || cfg_.device == "auto") {
      const char* lr = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
      if (!lr) lr = std::getenv("IPSNET_LOCAL_RANK");
      const int local = lr ? std::atoi(lr) : dp_->rank();
      const Device probe = resolve_device(cfg_.device);
      if (probe.is_cuda()) cfg_.device = "cuda:" + std::to_string(local);
    }
  }
  if (cfg_.threads > 0) set_num_threads(static_cast<int>(cfg_.threads));
  device_ = resolve_device(cfg_.device);
  IPSNET_CHECK(!cfg_.selection_bf16 || backend_for(device_).supports_bf16_conv(),
               "config key 'selection_bf16': true, but the ", device_.str(),
               " backend has no bfloat16 convolution here (the CPU needs AVX512-BF16, CUDA a device of compute "
               "capability 8.0 or newer); set it to false");
  IPSNET_CHECK(cfg_.precision != "bf16" ||
                   (backend_for(device_).supports_bf16_conv() && backend_for(device_).supports_bf16_gemm()),
               "config key 'precision': bf16, but the ", device_.str(),
               " backend has no bfloat16 convolution and matmul here (the CPU needs AVX512-BF16, CUDA a device of "
               "compute capability 8.0 or newer); set it to fp32");
  open_data(eval_only);
  if (dp_->active() && cfg_.sync_batchnorm && train_source_) {
    // Synchronised BatchNorm needs every rank in every training pass: no empty shard.
    const int64_t last = n_train_ % cfg_.B;
    IPSNET_CHECK(last == 0 || last >= dp_->size(), "config key 'sync_batchnorm': the last batch of an epoch has ",
                 last, " images, fewer than the ", dp_->size(),
                 " ranks, and each rank needs one (choose B or max_train so that it divides the training split)");
  }

  Generator init_gen(derive_seed(cfg_.seed, kInit));
  dropout_gen_ = Generator(derive_seed(cfg_.seed, kDropout));
  MethodContext ctx{cfg_, train_source_ ? *train_source_ : *eval_source_, device_, init_gen, &dropout_gen_};
  method_ = make_method(ctx);
  if (cfg_.proxy.enabled && train_source_ && !eval_only) {
    const ProxyAttentionConfig& p = cfg_.proxy;
    IPSNET_CHECK(!dp_->active(), "config key 'proxy_attention': proxy steps run in one process; this run has ",
                 dp_->size(), " ranks (leave the section out, or run it without mpirun)");
    IPSNET_CHECK(train_source_->has_pixels(), "config key 'proxy_attention': the ", train_source_->kind(),
                 " data source has no pixels (feature bags): there is nothing to mask");
    const std::vector<std::string> kinds = method_->explanations();
    std::string list;
    for (const std::string& k : kinds) list += (list.empty() ? "" : ", ") + k;
    IPSNET_CHECK(!kinds.empty(), "config key 'proxy_attention': method '", method_->name(),
                 "' has no explanation map (methods with one: cnn (gradcam_pp, gradcam, cam), ips and ats "
                 "(attention))");
    proxy_kind_ = p.explain == "auto" ? kinds.front() : p.explain;
    IPSNET_CHECK(std::find(kinds.begin(), kinds.end(), proxy_kind_) != kinds.end(),
                 "config key 'proxy_attention.explain': method '", method_->name(), "' has no '", proxy_kind_,
                 "' map (it has: ", list, ")");
    IPSNET_CHECK(p.count <= n_train_, "config key 'proxy_attention.count': ", p.count,
                 " worst examples requested, but the training set has only ", n_train_, " images");
    proxy_source_ = std::make_unique<ProxyTrainSource>(*train_source_, n_base_, p.mode);
  }
  std::vector<std::pair<std::string, Tensor>> params;
  for (const auto& it : model().named_parameters()) params.emplace_back(it.first, it.second);
  if (cfg_.optimizer == "sgd") {
    SGDOptions so;
    so.momentum = cfg_.momentum;
    so.weight_decay = cfg_.wd;
    so.exclude_norm_and_bias = cfg_.wd_exclude_norm_bias;
    optim_ = std::make_unique<SGD>(params, so);
  } else {  // adamw | adam (validate() allows no other)
    AdamWOptions ao;
    ao.lr = cfg_.lr;
    ao.weight_decay = cfg_.wd;
    ao.exclude_norm_and_bias = cfg_.wd_exclude_norm_bias;
    ao.decoupled = cfg_.optimizer == "adamw";
    optim_ = std::make_unique<AdamW>(params, ao);
  }
  schedule_ = Schedule();
  schedule_.lr = cfg_.lr;
  schedule_.warmup_steps = steps_per_epoch() * cfg_.n_epoch_warmup;
  schedule_.total_steps = steps_per_epoch() * cfg_.n_epoch;
  schedule_.kind = cfg_.lr_schedule;
  schedule_.steps_per_epoch = steps_per_epoch();
  spe0_ = steps_per_epoch();
  schedule_.decrease_at = cfg_.decrease_lr_at;
  // Every rank starts from rank 0's weights; the trained parameters' gradients
  // are summed over the ranks in 8 MiB buckets while backward runs.
  dp_->broadcast_module(model());
  {
    std::vector<Tensor> trained;
    for (const Tensor& p : model().parameters())
      if (p.requires_grad()) trained.push_back(p);
    dp_->attach(trained, int64_t(8) << 20);
  }

  if (create_run_dir && dp_->writer()) {
    // Two checkpoints (last, best) of weights and AdamW moments, plus the
    // temporary of the one being written: refuse when the disk cannot hold them.
    double ckpt = 0;
    for (const auto& it : model().named_parameters()) ckpt += 3.0 * static_cast<double>(it.second.nbytes());
    const long long free_bytes = free_disk_bytes(cfg_.out_dir);
    IPSNET_CHECK(free_bytes < 0 || 3 * ckpt <= static_cast<double>(free_bytes), "the run needs an estimated ",
                 human_bytes(3 * ckpt), " of disk for its checkpoints but '", cfg_.out_dir, "' has ",
                 human_bytes(static_cast<double>(free_bytes)), " free");
    std::error_code ec;
    fs::create_directories(cfg_.out_dir, ec);
    IPSNET_CHECK(fs::is_directory(cfg_.out_dir), "cannot create the output directory '", cfg_.out_dir, "': ",
                 ec ? ec.message() : std::string("not a directory"));
    if (cfg_.run_name.empty()) {
      // <dataset>-<timestamp>, made unique by creating it: runs started in the
      // same second get -2, -3, ...
      const std::string base = (fs::path(cfg_.out_dir) / (cfg_.dataset + "-" + timestamp())).string();
      for (int k = 1;; ++k) {
        run_dir_ = k == 1 ? base : base + "-" + std::to_string(k);
        if (fs::create_directory(run_dir_, ec)) break;
        IPSNET_CHECK(!ec || ec == std::errc::file_exists, "cannot create the run directory '", run_dir_, "': ",
                     ec.message());
        IPSNET_CHECK(k < 10000, "cannot find a free run directory name beside '", base, "'");
      }
    } else {
      run_dir_ = (fs::path(cfg_.out_dir) / cfg_.run_name).string();
      fs::create_directories(run_dir_, ec);
      IPSNET_CHECK(!ec && fs::is_directory(run_dir_), "cannot create the run directory '", run_dir_,
                   "': ", ec.message());
    }
    run_lock_ = std::make_unique<PathLock>(run_dir_, "run directory");
    IPSNET_CHECK(!fs::exists(fs::path(run_dir_) / "config.yaml"), "run directory '", run_dir_,
                 "' already holds a run (continue it with --resume, or choose another run_name)");
    try {
      write_file_atomic((fs::path(run_dir_) / "config.yaml").string(), to_yaml(cfg_));
    } catch (const Error&) {
      // A run directory without its config is no run: remove it if empty.
      run_lock_.reset();
      fs::remove(run_dir_, ec);
      throw;
    }
  }
  if (create_run_dir) run_dir_ = dp_->broadcast_string(run_dir_);
}

const data::DataSource& Trainer::source(const std::string& split) const {
  const auto& s = split == "train" ? train_source_ : eval_source_;
  IPSNET_CHECK(s != nullptr && (split == "train" || split == cfg_.eval_split), "split '", split,
               "' is not open (evaluation opens only the split it evaluates: '", cfg_.eval_split, "')");
  return *s;
}

int64_t Trainer::steps_per_epoch() const { return (n_train_ + cfg_.B - 1) / cfg_.B; }

const data::DataSource& Trainer::train_data() const {
  IPSNET_CHECK(train_source_ != nullptr, "the training split is not open");
  return proxy_source_ ? static_cast<const data::DataSource&>(*proxy_source_) : *train_source_;
}

data::DataSource& Trainer::train_data_mut() {
  IPSNET_CHECK(train_source_ != nullptr, "the training split is not open");
  return proxy_source_ ? static_cast<data::DataSource&>(*proxy_source_) : *train_source_;
}

int64_t Trainer::schedule_step() const {
  if (!proxy_source_) return step_;
  return epoch_ * spe0_ + batch_in_epoch_ * spe0_ / std::max<int64_t>(1, steps_per_epoch());
}

void Trainer::use_proxy_cycles(int64_t cycles) {
  for (int64_t k = static_cast<int64_t>(proxy_stores_.size()) + 1; k <= cycles; ++k)
    proxy_stores_.push_back(std::make_shared<const ProxyStore>(proxy_cycle_dir(run_dir_, k)));
  proxy_stores_.resize(static_cast<size_t>(cycles));
  std::vector<std::shared_ptr<const ProxyStore>> active;
  if (cycles > 0) {
    if (cfg_.proxy.clear_every_step)
      active.push_back(proxy_stores_.back());
    else
      active = proxy_stores_;
  }
  proxy_source_->set_stores(active);
  proxy_cycles_ = cycles;
  n_train_ = proxy_source_->size();
}

void Trainer::run_proxy_cycle() {
  const int64_t k = proxy_cycles_ + 1;
  ProxyStepResult r = run_proxy_step(*method_, train_data(), n_base_, cfg_, proxy_kind_, device_, k, epoch_, run_dir_,
                                     derive_seed(cfg_.seed, kProxy) + static_cast<uint64_t>(k), quiet_);
  use_proxy_cycles(k);
  log_line("proxy step " + std::to_string(k) + " after epoch " + std::to_string(epoch_) + " | " + proxy_kind_ +
           " | " + std::to_string(r.changed) + " of " + std::to_string(r.candidates) + " " +
           (cfg_.proxy.select == "misclassified" ? "misclassified" : "candidate") + " images changed (mean loss " +
           fmt(r.mean_loss, 4) + ", " + fmt(100.0 * r.changed_pixels, 2) + " % of their pixels) | training set " +
           std::to_string(n_train_) + " images | " + fmt(r.seconds, 1) + " s | " + r.dir);
  std::ostringstream js;
  js << "{\"epoch\": " << epoch_ << ", \"proxy_step\": " << k << ", \"explain\": \"" << proxy_kind_
     << "\", \"candidates\": " << r.candidates << ", \"changed\": " << r.changed
     << ", \"mean_loss\": " << fmt(r.mean_loss, 6) << ", \"changed_pixels\": " << fmt(r.changed_pixels, 6)
     << ", \"train_images\": " << n_train_ << ", \"seconds\": " << fmt(r.seconds, 2) << "}\n";
  append_file((fs::path(run_dir_) / "metrics.jsonl").string(), js.str());
}

std::vector<int64_t> Trainer::epoch_order(int64_t epoch) const {
  Generator g(derive_seed(cfg_.seed, kEpochOrder), static_cast<uint64_t>(epoch));
  return g.permutation(n_train_);
}

std::unique_ptr<Batch> Trainer::prepare(const data::DataSource& source, const std::vector<int64_t>& ids) const {
  auto b = std::make_unique<Batch>(source, ids, device_, cfg_.eager, cfg_.B_seq);
  b->prepare();
  return b;
}

std::map<std::string, Tensor> Trainer::probabilities(const MethodOutput& out) const {
  std::map<std::string, Tensor> p;
  for (const TaskConfig& t : cfg_.tasks) {
    Tensor l = out.logits.at(t.name).detach();
    p[t.name] = (t.act_fn == "sigmoid" ? ops::sigmoid(l) : ops::softmax(l, -1)).to(Device::cpu()).contiguous();
  }
  return p;
}

double Trainer::train_step(const std::vector<int64_t>& ids) { return train_step(prepare(train_data(), ids)); }

double Trainer::train_step(std::unique_ptr<Batch> batch) {
  const std::vector<int64_t> ids = batch->ids();
  // This rank's shard of the global batch (all of it in one process).
  const int64_t n_local = static_cast<int64_t>(ids.size());
  const int64_t n_global =
      dp_->active() ? static_cast<int64_t>(std::llround(dp_->sum(static_cast<double>(n_local)))) : n_local;
  double lv = 0;
  Generator sel_gen(derive_seed(cfg_.seed, kSelect), static_cast<uint64_t>(step_));
  dropout_gen_.set_state(derive_seed(cfg_.seed, kDropout), 0, static_cast<uint64_t>(step_));
  auto t0 = std::chrono::steady_clock::now();
  // precision: bf16: the selection's and the training pass's convolutions and
  // matmuls (their backward nodes keep the mode) in bfloat16; the rest float32.
  PrecisionGuard precision(cfg_.precision == "bf16");
  if (n_local > 0) method_->select(*batch, true, sel_gen);
  auto t1 = std::chrono::steady_clock::now();
  model().train();
  optim_->zero_grad();
  if (n_local == 0) {  // a last global batch smaller than the ranks: this one only joins the sums
    dp_->begin_backward(0, n_global);
    dp_->end_backward();
  } else {
  std::map<std::string, Tensor> targets = batch_targets(batch->source(), ids, cfg_.tasks);
  for (auto& kv : targets) kv.second = kv.second.to(device_);
  // sync_batchnorm: the training pass's BatchNorm statistics over every rank's shard.
  BatchNormSyncGuard bn_sync(dp_->active() && cfg_.sync_batchnorm ? dp_.get() : nullptr);
  MethodOutput out = method_->forward(*batch, targets);
  lv = out.loss.item();
  if (!std::isfinite(lv)) {
    const std::string last = run_dir_.empty() ? "" : (fs::path(run_dir_) / "checkpoint_last.safetensors").string();
    IPSNET_FAIL("the training loss is ", lv, " at step ", step_ + 1, " (epoch ", epoch_ + 1,
                "): training diverged, nothing more is saved; ",
                !last.empty() && fs::exists(last) ? "the last good checkpoint is '" + last + "'"
                                                  : std::string("no checkpoint was saved yet"),
                " (lower lr, set grad_clip, or check the data)");
  }
  {
    NoGradGuard ng;
    std::map<std::string, Tensor> probs = probabilities(out);
    for (const TaskConfig& t : cfg_.tasks) {
      epoch_probs_[t.name].push_back(probs.at(t.name));
      epoch_targets_[t.name].push_back(targets.at(t.name).to(Device::cpu()));
      epoch_loss_sum_[t.name] += out.losses.at(t.name) * static_cast<double>(ids.size());
    }
    epoch_images_ += static_cast<int64_t>(ids.size());
  }
  dp_->begin_backward(n_local, n_global);
  out.loss.backward();
  dp_->end_backward();
  }
  std::vector<Tensor> params = model().parameters();
  if (cfg_.grad_clip > 0) clip_grad_norm(params, cfg_.grad_clip);
  last_lr_ = schedule_.at(schedule_step());
  optim_->step(last_lr_);
  ++step_;
  auto t2 = std::chrono::steady_clock::now();
  last_select_ms_ = elapsed_ms(t0, t1);
  last_train_ms_ = elapsed_ms(t1, t2);
  // The global batch's mean loss (each rank's is the mean over its shard).
  if (dp_->active()) lv = dp_->sum(lv * static_cast<double>(n_local)) / static_cast<double>(std::max<int64_t>(1, n_global));
  return lv;
}

EvalResult Trainer::evaluate(const std::string& split, const std::string& predictions_csv) {
  const data::DataSource& src = source(split);
  const int64_t n = split == "train" ? n_base_ : n_eval_;  // the split itself, without proxy images
  NoGradGuard ng;
  TrainModeGuard eval_mode(model(), false);
  EvalResult res;
  std::map<std::string, std::vector<Tensor>> probs, targs;
  std::map<std::string, double> loss_sum;
  std::unique_ptr<AtomicFile> csv;
  const bool rows_wanted = !predictions_csv.empty();  // every rank makes its rows; rank 0 writes them all
  if (rows_wanted && dp_->writer()) {
    csv = std::make_unique<AtomicFile>(predictions_csv);
    std::string header = "image";
    for (const TaskConfig& t : cfg_.tasks) {
      header += "," + t.name + "_pred";
      for (int64_t c = 0; c < t.n_class; ++c) header += "," + t.name + "_p" + std::to_string(c);
    }
    *csv << header + ",selected_patches\n";
  }
  Progress prog("eval " + split, n, !quiet_);
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t s = 0, bi = 0; s < n; s += cfg_.B, ++bi) {
    std::vector<int64_t> all_ids;
    for (int64_t i = s; i < std::min(n, s + cfg_.B); ++i) all_ids.push_back(i);
    // Data-parallel: each rank evaluates its shard of the batch.
    const std::vector<int64_t> ids = dp_->shard(all_ids);
    if (ids.empty()) {
      if (rows_wanted) {
        const std::string rows = dp_->gather_string("");
        if (csv) *csv << rows;
      }
      prog.update(static_cast<int64_t>(all_ids.size()));
      continue;
    }
    Generator gen(derive_seed(cfg_.seed, kEvalSelect), static_cast<uint64_t>(bi));
    Batch batch(src, ids, device_, cfg_.eager, cfg_.B_seq);
    PrecisionGuard precision(cfg_.precision == "bf16");
    method_->select(batch, false, gen);
    std::map<std::string, Tensor> targets = batch_targets(src, ids, cfg_.tasks);
    for (auto& kv : targets) kv.second = kv.second.to(device_);
    MethodOutput out = method_->forward(batch, targets);
    std::map<std::string, Tensor> p_cpu = probabilities(out);
    for (const TaskConfig& t : cfg_.tasks) {
      probs[t.name].push_back(p_cpu.at(t.name));
      targs[t.name].push_back(targets.at(t.name).to(Device::cpu()));
      loss_sum[t.name] += out.losses.at(t.name) * static_cast<double>(ids.size());
    }
    if (rows_wanted) {
      std::ostringstream rows;
      std::vector<int64_t> iv = out.selected.defined() ? out.selected.to_vector<int64_t>() : std::vector<int64_t>();
      const size_t M = out.selected.defined() ? static_cast<size_t>(out.selected.size(1)) : 0;
      for (size_t b = 0; b < ids.size(); ++b) {
        rows << ids[b];
        for (const TaskConfig& t : cfg_.tasks) {
          std::vector<float> pv = p_cpu[t.name].to_vector<float>();
          const float* row = pv.data() + static_cast<int64_t>(b) * t.n_class;
          if (t.act_fn == "softmax") {
            rows << "," << (std::max_element(row, row + t.n_class) - row);
          } else {
            rows << ",";
            bool first = true;
            for (int64_t c = 0; c < t.n_class; ++c)
              if (row[c] > 0.5f) {
                rows << (first ? "" : " ") << c;
                first = false;
              }
          }
          for (int64_t c = 0; c < t.n_class; ++c) rows << "," << std::setprecision(9) << row[c];  // full float precision
        }
        rows << ",";
        for (size_t j = 0; j < M; ++j) rows << (j ? " " : "") << iv[b * M + j];
        rows << "\n";
      }
      const std::string all_rows = dp_->gather_string(rows.str());  // in image order: shards are contiguous
      if (csv) *csv << all_rows;
    }
    prog.update(static_cast<int64_t>(all_ids.size()));
  }
  res.images = n;
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double msum = 0, lsum = 0;
  for (const TaskConfig& t : cfg_.tasks) {
    TaskResult tr;
    // Every rank's predictions (one process: its own).
    const bool have = !probs[t.name].empty();
    Tensor p = dp_->gather_cat(have ? ops::cat(probs[t.name], 0) : Tensor::zeros({0, t.n_class}));
    Tensor y = dp_->gather_cat(have ? ops::cat(targs[t.name], 0)
                                    : (t.act_fn == "sigmoid" ? Tensor::zeros({0, t.n_class})
                                                             : Tensor::empty({0}, DType::Int64)));
    const double ls = dp_->sum(loss_sum[t.name]);
    tr.loss = n ? ls / static_cast<double>(n) : 0;
    tr.metric = n ? compute_metric(t.metric, p, y) : 0;
    res.tasks[t.name] = tr;
    msum += tr.metric;
    lsum += tr.loss;
  }
  res.loss = lsum / static_cast<double>(cfg_.tasks.size());
  res.mean_metric = msum / static_cast<double>(cfg_.tasks.size());
  if (csv) csv->commit();
  return res;
}

Attention Trainer::attend(const std::string& split, const std::vector<int64_t>& ids, bool all_scores) {
  const data::DataSource& src = source(split);
  for (int64_t i : ids)
    IPSNET_CHECK(i >= 0 && i < src.size(), "image index ", i, " out of range for the ", split, " split of ",
                 src.size(), " images");
  NoGradGuard ng;
  TrainModeGuard eval_mode(model(), false);
  Generator gen(derive_seed(cfg_.seed, kEvalSelect), 0);
  Batch batch(src, ids, device_, /*eager=*/false, cfg_.B_seq);
  PrecisionGuard precision(cfg_.precision == "bf16");
  return method_->attend(batch, all_scores, gen);
}

bool Trainer::should_stop() const {
  bool stop = interrupt_flag().load() || (stop_at_step_ > 0 && step_ >= stop_at_step_);
  if (dp_->active()) stop = dp_->sum(stop ? 1.0 : 0.0) > 0;
  return stop;
}

void Trainer::log_line(const std::string& line) const {
  if (!dp_->writer()) return;
  if (!quiet_) std::fprintf(stderr, "%s\n", line.c_str());
  if (!run_dir_.empty()) append_file((fs::path(run_dir_) / "train.log").string(), line + "\n");
}

void Trainer::write_epoch_metrics(int64_t epoch, const EvalResult& tr, const EvalResult& te, double lr, double seconds,
                                  double peak_mib) const {
  if (!dp_->writer()) return;
  std::string csv_path = (fs::path(run_dir_) / "metrics.csv").string();
  bool header = !fs::exists(csv_path);
  std::ostringstream csv, js;
  // proxy_attention: each row says after how many proxy steps its epoch trained, on how many images.
  const std::string proxy_cols = cfg_.proxy.enabled ? ",proxy_cycle,train_images" : "";
  const std::string proxy_vals =
      cfg_.proxy.enabled ? "," + std::to_string(proxy_cycles_) + "," + std::to_string(n_train_) : "";
  if (header)
    csv << "epoch,split,task,loss,metric_name,metric,lr,seconds,images_per_s,peak_allocated_mib" << proxy_cols << "\n";
  js << "{\"epoch\": " << epoch << ", \"lr\": " << lr << ", \"seconds\": " << fmt(seconds, 2);
  if (cfg_.proxy.enabled) js << ", \"proxy_cycle\": " << proxy_cycles_ << ", \"train_images\": " << n_train_;
  js
     << ", \"train_images_per_s\": " << fmt(tr.images / std::max(seconds, 1e-9), 2)
     << ", \"peak_allocated_mib\": " << fmt(peak_mib, 1) << ", \"tasks\": {";
  bool first = true;
  for (const TaskConfig& t : cfg_.tasks) {
    for (const auto& [split, r] : {std::make_pair(std::string("train"), &tr), std::make_pair(std::string("test"), &te)}) {
      auto it = r->tasks.find(t.name);
      if (it == r->tasks.end()) continue;
      csv << epoch << "," << split << "," << t.name << "," << fmt(it->second.loss, 6) << "," << t.metric << ","
          << fmt(it->second.metric, 6) << "," << lr << "," << fmt(seconds, 2) << ","
          << fmt(r->images / std::max(r->seconds > 0 ? r->seconds : seconds, 1e-9), 2) << "," << fmt(peak_mib, 1)
          << proxy_vals << "\n";
    }
    auto a = tr.tasks.find(t.name), b = te.tasks.find(t.name);
    js << (first ? "" : ", ") << "\"" << t.name << "\": {\"train_loss\": " << fmt(a != tr.tasks.end() ? a->second.loss : 0, 6)
       << ", \"train_" << t.metric << "\": " << fmt(a != tr.tasks.end() ? a->second.metric : 0, 6)
       << ", \"test_loss\": " << fmt(b != te.tasks.end() ? b->second.loss : 0, 6) << ", \"test_" << t.metric
       << "\": " << fmt(b != te.tasks.end() ? b->second.metric : 0, 6) << "}";
    first = false;
  }
  js << "}}\n";
  append_file(csv_path, csv.str());
  append_file((fs::path(run_dir_) / "metrics.jsonl").string(), js.str());
}

bool Trainer::fit() {
  if (!quiet_) {
    std::fprintf(stderr,
                 "ipsnet train: method %s on %lld train / %lld %s images (%s), M = %lld, I = %lld, B = %lld, %s "
                 "loading, device %s, %d threads\nrun directory: %s\n",
                 method_->name().c_str(), static_cast<long long>(n_train_), static_cast<long long>(n_eval_),
                 cfg_.eval_split.c_str(), train_data().describe().c_str(), static_cast<long long>(cfg_.M),
                 static_cast<long long>(cfg_.I), static_cast<long long>(cfg_.B),
                 cfg_.eager ? (cfg_.B_seq < cfg_.B ? "eager sequential" : "eager") : "lazy", device_.str().c_str(),
                 num_threads(), run_dir_.c_str());
  }
  std::string last = (fs::path(run_dir_) / "checkpoint_last.safetensors").string();
  std::string best = (fs::path(run_dir_) / "checkpoint_best.safetensors").string();
  // A run is resumable from its start: a disk that fills during the first
  // epoch leaves this step-0 checkpoint, not a run without one.
  // (Rank 0 looks; every rank takes part in the save.)
  if (dp_->sum(dp_->writer() && step_ == 0 && !fs::exists(last) ? 1.0 : 0.0) > 0) save_checkpoint(last);
  while (epoch_ < cfg_.n_epoch) {
    // proxy_attention: the proxy steps due after the epochs done (a resumed
    // run that stopped before one runs it now).
    if (proxy_source_ && batch_in_epoch_ == 0) {
      const std::vector<int64_t> due = cfg_.proxy.step_epochs();
      while (proxy_cycles_ < static_cast<int64_t>(due.size()) && due[static_cast<size_t>(proxy_cycles_)] <= epoch_) {
        run_proxy_cycle();
        save_checkpoint(last);
        if (should_stop()) {
          log_line("interrupted: saved " + last + " (resume with `ipsnet train --resume " + run_dir_ + "`)");
          return false;
        }
      }
    }
    const int64_t spe = steps_per_epoch();
    std::vector<int64_t> order = epoch_order(epoch_);
    train_data_mut().set_epoch(epoch_);  // the epoch's augmentation (none is prepared ahead across epochs)
    reset_peak_memory(device_);
    auto t0 = std::chrono::steady_clock::now();
    Progress prog("epoch " + std::to_string(epoch_ + 1) + "/" + std::to_string(cfg_.n_epoch), n_train_, !quiet_);
    prog.update(std::min(n_train_, batch_in_epoch_ * cfg_.B));
    double loss_acc = 0;
    int64_t loss_n = 0;
    // This rank's shard of global batch bi (the whole batch in one process).
    auto batch_ids = [&](int64_t bi) {
      return dp_->shard(
          std::vector<int64_t>(order.begin() + bi * cfg_.B, order.begin() + std::min(n_train_, (bi + 1) * cfg_.B)));
    };
    auto global_size = [&](int64_t bi) { return std::min(n_train_, (bi + 1) * cfg_.B) - bi * cfg_.B; };
    // The next batch is prepared on a background thread while this one trains.
    std::future<std::unique_ptr<Batch>> next;
    for (int64_t bi = batch_in_epoch_; bi < spe; ++bi) {
      std::vector<int64_t> ids = batch_ids(bi);
      std::unique_ptr<Batch> cur = next.valid() ? next.get() : prepare(train_data(), ids);
      if (cfg_.prefetch && bi + 1 < spe)
        next = std::async(std::launch::async, [this, ids = batch_ids(bi + 1)] { return prepare(train_data(), ids); });
      auto s0 = std::chrono::steady_clock::now();
      double lv = train_step(std::move(cur));
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s0).count();
      loss_acc += lv;
      ++loss_n;
      batch_in_epoch_ = bi + 1;
      prog.update(global_size(bi), "loss " + fmt(loss_acc / loss_n, 4));
      if (cfg_.log_every > 0 && step_ % cfg_.log_every == 0) {
        log_line("step " + std::to_string(step_) + " | loss " + fmt(lv, 4) + " | lr " +
                 fmt(last_lr_, 7) + " | " +
                 fmt(ms, 1) + " ms (select " + fmt(last_select_ms_, 0) + ", train " + fmt(last_train_ms_, 0) +
                 ") | " + fmt(global_size(bi) * 1000.0 / ms, 1) + " img/s | peak " +
                 fmt(memory_stats(device_).peak_allocated_bytes / 1048576.0, 1) + " MiB");
      }
      if (should_stop()) {
        save_checkpoint(last);
        log_line("interrupted: saved " + last + " (resume with `ipsnet train --resume " + run_dir_ + "`)");
        return false;
      }
    }
    double train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    prog.finish("loss " + fmt(loss_n ? loss_acc / loss_n : 0, 4));
    double peak_mib = memory_stats(device_).peak_allocated_bytes / 1048576.0;
    ++epoch_;
    batch_in_epoch_ = 0;
    EvalResult tr = epoch_train_result(), te;
    epoch_probs_.clear();
    epoch_targets_.clear();
    epoch_loss_sum_.clear();
    epoch_images_ = 0;
    if (cfg_.eval_every > 0 && (epoch_ % cfg_.eval_every == 0 || epoch_ == cfg_.n_epoch))
      te = evaluate(cfg_.eval_split);
    tr.seconds = train_seconds;
    tr.images = n_train_;
    double lr = last_lr_;
    write_epoch_metrics(epoch_, tr, te, lr, train_seconds, peak_mib);
    history_.emplace_back(tr, te);
    std::ostringstream line;
    line << "epoch " << epoch_ << "/" << cfg_.n_epoch << " | " << fmt(train_seconds, 1) << " s | "
         << fmt(n_train_ / std::max(train_seconds, 1e-9), 1) << " img/s | peak " << fmt(peak_mib, 1) << " MiB";
    for (const TaskConfig& t : cfg_.tasks) {
      auto it = te.tasks.find(t.name);
      if (it != te.tasks.end()) line << " | " << t.name << " " << t.metric << " " << fmt(it->second.metric, 4);
    }
    log_line(line.str());
    bool improved = !te.tasks.empty() && te.mean_metric > best_metric_;
    if (improved) best_metric_ = te.mean_metric;
    save_checkpoint(last);
    if (improved) save_checkpoint(best);
    dp_->check_in_sync(model(), step_);
    if (should_stop()) return false;
  }
  return true;
}

Trainer::EpochTrainState Trainer::epoch_train_state() const {
  EpochTrainState st;
  st.images = static_cast<int64_t>(std::llround(dp_->sum(static_cast<double>(epoch_images_))));
  for (const TaskConfig& t : cfg_.tasks) {
    auto pi = epoch_probs_.find(t.name);
    const bool have = pi != epoch_probs_.end() && !pi->second.empty();
    // A rank without images this epoch sends empty tensors of the right shape.
    Tensor p = have ? ops::cat(pi->second, 0) : Tensor::zeros({0, t.n_class});
    Tensor y = have ? ops::cat(epoch_targets_.at(t.name), 0)
                    : (t.act_fn == "sigmoid" ? Tensor::zeros({0, t.n_class}) : Tensor::empty({0}, DType::Int64));
    auto li = epoch_loss_sum_.find(t.name);
    st.probs[t.name] = dp_->gather_cat(p);
    st.targets[t.name] = dp_->gather_cat(y);
    st.loss_sum[t.name] = dp_->sum(li == epoch_loss_sum_.end() ? 0.0 : li->second);
  }
  return st;
}

EvalResult Trainer::epoch_train_result() const {
  EvalResult r;
  const EpochTrainState st = epoch_train_state();
  if (st.images == 0) return r;
  double msum = 0, lsum = 0;
  for (const TaskConfig& t : cfg_.tasks) {
    TaskResult tr;
    tr.loss = st.loss_sum.at(t.name) / static_cast<double>(st.images);
    tr.metric = compute_metric(t.metric, st.probs.at(t.name), st.targets.at(t.name));
    r.tasks[t.name] = tr;
    msum += tr.metric;
    lsum += tr.loss;
  }
  r.loss = lsum / static_cast<double>(cfg_.tasks.size());
  r.mean_metric = msum / static_cast<double>(cfg_.tasks.size());
  r.images = st.images;
  return r;
}

void Trainer::save_checkpoint(const std::string& path) const {
  // Every rank takes part (the partial epoch's metrics of all ranks); rank 0 writes.
  const EpochTrainState partial = epoch_train_state();
  if (!dp_->writer()) return;
  TensorDict td = method_->model().state_dict();
  for (const auto& [name, t] : optim_->state()) td.insert("optimizer." + name, t);
  std::map<std::string, std::string> meta;
  meta["format"] = "ipsnet-checkpoint-1";
  meta["config"] = to_yaml(cfg_);
  meta["epoch"] = std::to_string(epoch_);
  meta["batch_in_epoch"] = std::to_string(batch_in_epoch_);
  meta["step"] = std::to_string(step_);
  meta["optimizer_step"] = std::to_string(optim_->step_count());
  if (cfg_.proxy.enabled) {
    meta["proxy.cycles"] = std::to_string(proxy_cycles_);
    std::ostringstream lr;
    lr << std::setprecision(17) << last_lr_;
    meta["last_lr"] = lr.str();
  }
  std::ostringstream bm;
  bm << std::setprecision(17) << best_metric_;
  meta["best_metric"] = bm.str();
  // The partial epoch's train metrics (an interrupt mid-epoch): predictions,
  // targets and loss sums, so the resumed epoch reports what an uninterrupted
  // one would.
  meta["metrics.images"] = std::to_string(partial.images);
  for (const auto& [task, probs] : partial.probs) {
    if (probs.size(0) == 0) continue;
    td.insert("metrics." + task + ".probs", probs);
    td.insert("metrics." + task + ".targets", partial.targets.at(task));
    std::ostringstream ls;
    ls << std::setprecision(17) << partial.loss_sum.at(task);
    meta["metrics." + task + ".loss_sum"] = ls.str();
  }
  safetensors::save(path, td, meta);
}

void Trainer::load_checkpoint(const std::string& path, bool with_optimizer) {
  safetensors::File f = safetensors::load(path);
  TensorDict weights, optim, metrics;
  for (const auto& it : f.tensors) {
    if (it.first.rfind("optimizer.", 0) == 0)
      optim.insert(it.first.substr(10), it.second);
    else if (it.first.rfind("metrics.", 0) == 0)
      metrics.insert(it.first.substr(8), it.second);
    else
      weights.insert(it.first, it.second);
  }
  {
    // A checkpoint of another architecture: one line with the count of each
    // kind of difference and its first names (the loader itself would list up
    // to 20 names per kind, one per line).
    TensorDict own = model().state_dict();
    std::vector<std::string> mismatched, missing, unexpected;
    for (const auto& it : own) {
      if (!weights.contains(it.first)) {
        const std::string leaf = "num_batches_tracked";  // defaulted to 0 by the loader
        if (it.first.size() >= leaf.size() && it.first.compare(it.first.size() - leaf.size(), leaf.size(), leaf) == 0)
          continue;
        missing.push_back(it.first);
      } else if (weights.at(it.first).shape() != it.second.shape()) {
        mismatched.push_back(it.first + ": checkpoint " + shape_str(weights.at(it.first).shape()) + " vs model " +
                             shape_str(it.second.shape()));
      }
    }
    for (const auto& it : weights)
      if (!own.contains(it.first)) unexpected.push_back(it.first);
    std::string diff;
    auto list = [&](const char* what, const std::vector<std::string>& names) {
      if (names.empty()) return;
      diff += (diff.empty() ? "" : "; ") + std::string(what) + " (" + std::to_string(names.size()) + "): ";
      for (size_t i = 0; i < std::min<size_t>(names.size(), 3); ++i) diff += (i ? ", " : "") + names[i];
      if (names.size() > 3) diff += ", ... and " + std::to_string(names.size() - 3) + " more";
    };
    list("size mismatch", mismatched);
    list("missing keys", missing);
    list("unexpected keys", unexpected);
    IPSNET_CHECK(diff.empty(), "checkpoint '", path, "' does not match the model of the configuration: ", diff);
  }
  model().load_state_dict(weights, true);
  auto num = [&](const char* k, int64_t lo, int64_t hi) -> int64_t {
    auto it = f.metadata.find(k);
    if (it == f.metadata.end()) return 0;
    const std::string& v = it->second;
    errno = 0;
    char* end = nullptr;
    long long x = std::strtoll(v.c_str(), &end, 10);
    IPSNET_CHECK(!v.empty() && end && *end == '\0' && errno == 0 && x >= lo && x <= hi, "checkpoint '", path,
                 "': metadata key '", k, "' is '", v, "', expected an integer in ", lo, "..", hi,
                 " (a corrupt or edited checkpoint)");
    return x;
  };
  if (with_optimizer) {
    std::vector<std::pair<std::string, Tensor>> st;
    for (const auto& it : optim) st.emplace_back(it.first, it.second.to(device_));
    if (proxy_source_) {
      // The proxy steps the checkpoint had done: their images from the run directory.
      const int64_t cycles = num("proxy.cycles", 0, static_cast<int64_t>(cfg_.proxy.step_epochs().size()));
      IPSNET_CHECK(run_dir_.empty() || cycles == 0 || fs::is_directory(proxy_cycle_dir(run_dir_, cycles)), "checkpoint '",
                   path, "' was saved after proxy step ", cycles, " but '", proxy_cycle_dir(run_dir_, cycles),
                   "' is missing (the run directory's proxy images were moved or deleted)");
      if (!run_dir_.empty()) use_proxy_cycles(cycles);
      auto it = f.metadata.find("last_lr");
      if (it != f.metadata.end()) last_lr_ = std::strtod(it->second.c_str(), nullptr);
    }
    const int64_t spe = steps_per_epoch();
    epoch_ = num("epoch", 0, cfg_.n_epoch);
    batch_in_epoch_ = num("batch_in_epoch", 0, epoch_ < cfg_.n_epoch ? spe : 0);
    step_ = num("step", 0, INT64_MAX);
    optim_->load_state(st, num("optimizer_step", 0, INT64_MAX));
    auto it = f.metadata.find("best_metric");
    if (it != f.metadata.end()) {
      char* end = nullptr;
      best_metric_ = std::strtod(it->second.c_str(), &end);
      IPSNET_CHECK(!it->second.empty() && end && *end == '\0', "checkpoint '", path,
                   "': metadata key 'best_metric' is '", it->second, "', expected a number");
    }
    // The partial epoch's train metrics.
    epoch_probs_.clear();
    epoch_targets_.clear();
    epoch_loss_sum_.clear();
    epoch_images_ = num("metrics.images", 0, n_train_);
    if (epoch_images_ > 0) {
      for (const TaskConfig& t : cfg_.tasks) {
        const std::string pk = t.name + ".probs", tk = t.name + ".targets";
        auto ls = f.metadata.find("metrics." + t.name + ".loss_sum");
        IPSNET_CHECK(metrics.contains(pk) && metrics.contains(tk) && ls != f.metadata.end() &&
                         metrics.at(pk).dim() >= 1 && metrics.at(pk).size(0) == epoch_images_ &&
                         metrics.at(tk).dim() >= 1 && metrics.at(tk).size(0) == epoch_images_,
                     "checkpoint '", path, "': the partial epoch's metrics of task '", t.name,
                     "' are missing or do not cover its ", epoch_images_, " images");
        epoch_probs_[t.name].push_back(metrics.at(pk));
        epoch_targets_[t.name].push_back(metrics.at(tk));
        char* end = nullptr;
        epoch_loss_sum_[t.name] = std::strtod(ls->second.c_str(), &end);
        IPSNET_CHECK(end && *end == '\0', "checkpoint '", path, "': metadata key 'metrics.", t.name,
                     ".loss_sum' is '", ls->second, "', expected a number");
      }
    }
  }
}

void Trainer::truncate_metrics() const {
  // Rows written after the checkpoint (a checkpoint write that failed, a kill
  // between the metrics and the checkpoint) are dropped: the resumed run
  // writes them again.
  auto cut = [&](const std::string& name, bool csv) {
    const std::string path = (fs::path(run_dir_) / name).string();
    if (!fs::exists(path)) return;
    std::ifstream in(path);
    IPSNET_CHECK(in.good(), "cannot read '", path, "'");
    std::string line, kept;
    bool changed = false, first = true;
    while (std::getline(in, line)) {
      int64_t e = -1;
      if (csv) {
        const bool header = first && line.rfind("epoch,", 0) == 0;
        first = false;
        if (header) {
          kept += line + "\n";
          continue;
        }
        e = std::strtoll(line.c_str(), nullptr, 10);
      } else {
        size_t p = line.find("\"epoch\": ");
        if (p != std::string::npos) e = std::strtoll(line.c_str() + p + 9, nullptr, 10);  // after `"epoch": `
      }
      int64_t ps = 0;  // a proxy step's row (metrics.jsonl)
      if (!csv) {
        size_t q = line.find("\"proxy_step\": ");
        if (q != std::string::npos) ps = std::strtoll(line.c_str() + q + 14, nullptr, 10);
      }
      if (line.empty() || e > epoch_ || e < 1 || ps > proxy_cycles_) {
        changed = true;
        continue;
      }
      kept += line + "\n";
    }
    if (!changed) return;
    if (kept.empty()) {
      fs::remove(path);  // nothing of the checkpoint's epochs: written again with its header
      return;
    }
    write_file_atomic(path, kept);
  };
  cut("metrics.csv", true);
  cut("metrics.jsonl", false);
}

std::unique_ptr<Trainer> Trainer::resume(const std::string& run_dir, bool quiet,
                                         const std::vector<std::string>& overrides) {
  IPSNET_CHECK(fs::is_directory(run_dir), "--resume: '", run_dir, "' is not a run directory");
  // One process per run: a second `train --resume` stops here in one line.
  // (In a data-parallel run rank 0 holds it for all.)
  auto lock = dist::world().rank() == 0 ? std::make_unique<PathLock>(run_dir, "run directory") : nullptr;
  std::string ckpt = (fs::path(run_dir) / "checkpoint_last.safetensors").string();
  IPSNET_CHECK(fs::exists(ckpt), "--resume: '", run_dir, "' has no checkpoint_last.safetensors");
  safetensors::File f = safetensors::load(ckpt);
  auto it = f.metadata.find("config");
  IPSNET_CHECK(it != f.metadata.end(), "--resume: '", ckpt, "' is not an ipsnet training checkpoint (no config)");
  Config cfg = parse_config(it->second, ckpt + " (its config)");
  for (const std::string& o : overrides) {
    const std::string key = o.substr(0, o.find('='));
    IPSNET_CHECK(key == "threads" || key == "device" || key == "log_every" || key == "prefetch",
                 "--resume continues a run with the configuration saved in it: '", key,
                 "' cannot change (only threads, device, log_every, prefetch may; start a new run instead)");
    apply_override(cfg, o);
  }
  std::unique_ptr<Trainer> t(new Trainer(cfg, quiet, 0));
  t->run_dir_ = run_dir;
  t->run_lock_ = std::move(lock);
  t->load_checkpoint(ckpt, true);
  if (t->dp_->writer()) {
    t->truncate_metrics();
  } else {  // the partial epoch's metrics of all ranks were saved in the checkpoint: rank 0 keeps them
    t->epoch_probs_.clear();
    t->epoch_targets_.clear();
    t->epoch_loss_sum_.clear();
    t->epoch_images_ = 0;
  }
  return t;
}

std::unique_ptr<Trainer> Trainer::from_checkpoint(const std::string& checkpoint,
                                                  const std::vector<std::string>& overrides, bool quiet,
                                                  const std::string& config_path) {
  IPSNET_CHECK(fs::exists(checkpoint), "checkpoint '", checkpoint, "' does not exist");
  Config cfg;
  if (!config_path.empty()) {
    cfg = load_config(config_path);
  } else {
    safetensors::File f = safetensors::load(checkpoint);
    auto it = f.metadata.find("config");
    IPSNET_CHECK(it != f.metadata.end(), "checkpoint '", checkpoint,
                 "' has no ipsnet config in its metadata (weights from elsewhere, e.g. PyTorch): give the model's "
                 "config with --config FILE");
    cfg = parse_config(it->second, checkpoint);
  }
  for (const std::string& o : overrides) apply_override(cfg, o);
  cfg.N = 0;  // recomputed from the (possibly new) data and patch grid
  std::unique_ptr<Trainer> t(new Trainer(cfg, quiet, 0, /*eval_only=*/true));
  t->load_checkpoint(checkpoint, false);
  return t;
}

}  // namespace train
}  // namespace ipsnet

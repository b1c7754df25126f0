#include "train/trainer.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <future>
#include <iomanip>
#include <sstream>

#include "engine/backend/device_select.h"
#include "models/safetensors.h"
#include "train/batch.h"
#include "train/metrics.h"
#include "train/progress.h"

namespace ipsnet {
namespace train {

namespace fs = std::filesystem;

std::atomic<bool>& interrupt_flag() {
  static std::atomic<bool> flag{false};
  return flag;
}

namespace {

// Independent random streams derived from (seed, purpose, counter): every
// draw of a step depends only on the seed and the step number, which makes
// resuming exact without saving generator states.
enum Purpose : uint64_t { kInit = 1, kEpochOrder = 2, kSelect = 3, kDropout = 4, kEvalSelect = 5 };
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

void write_text_atomic(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    IPSNET_CHECK(f.good(), "cannot write '", tmp, "'");
    f << text;
    f.flush();
    IPSNET_CHECK(f.good(), "writing '", tmp, "' failed (disk full?)");
  }
  IPSNET_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename '", tmp, "' to '", path, "'");
}

void append_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::app);
  IPSNET_CHECK(f.good(), "cannot append to '", path, "'");
  f << text;
  IPSNET_CHECK(f.good(), "writing '", path, "' failed (disk full?)");
}

Tensor positions_of(const Tensor& pos, const Tensor& idx) {
  // idx: (B, M) int64 -> (B, M, D)
  Tensor flat = idx.reshape({-1}).to(pos.device());
  return ops::index_select(pos, 0, flat).reshape({idx.size(0), idx.size(1), pos.size(1)});
}

}  // namespace

Trainer::Trainer(Config cfg, bool quiet) : cfg_(std::move(cfg)), quiet_(quiet) { setup(true); }

void Trainer::setup(bool create_run_dir, bool eval_only) {
  validate(cfg_);
  if (cfg_.threads > 0) set_num_threads(static_cast<int>(cfg_.threads));
  device_ = resolve_device(cfg_.device);
  IPSNET_CHECK(!cfg_.selection_bf16 || backend_for(device_).supports_bf16_conv(),
               "config key 'selection_bf16': true, but the ", device_.str(),
               " backend has no bfloat16 convolution here (the CPU needs AVX512-BF16; CUDA is not implemented); "
               "set it to false");
  IPSNET_CHECK(cfg_.is_image, "config key 'is_image': false (pre-extracted features) is not supported by the "
                              "Megapixel MNIST trainer yet");
  IPSNET_CHECK(!cfg_.data_dir.empty(), "config key 'data_dir' is empty: give the dataset directory made by "
                                       "`ipsnet generate-data` (or --set data_dir=DIR)");
  IPSNET_CHECK(fs::is_directory(cfg_.data_dir), "config key 'data_dir': '", cfg_.data_dir,
               "' is not a directory (make one with `ipsnet generate-data`)");
  // Evaluation opens only the split it evaluates (a directory may hold only test.npy's split).
  if (!eval_only || cfg_.eval_split == "train")
    train_reader_ = std::make_unique<data::DatasetReader>(data::DatasetReader::open(cfg_.data_dir, "train"));
  if (!eval_only || cfg_.eval_split != "train")
    test_reader_ = std::make_unique<data::DatasetReader>(data::DatasetReader::open(cfg_.data_dir, cfg_.eval_split));
  const data::DatasetReader& first = train_reader_ ? *train_reader_ : *test_reader_;
  check_tasks(first, cfg_.tasks);
  IPSNET_CHECK(cfg_.n_chan_in == 1, "config key 'n_chan_in': Megapixel MNIST has 1 channel, got ", cfg_.n_chan_in);
  grid_ = PatchGrid::make(first.height(), first.width(), cfg_.patch_size, cfg_.patch_stride);
  const int64_t N = grid_.count();
  IPSNET_CHECK(cfg_.N == 0 || cfg_.N == N, "config key 'N': ", cfg_.N, " but a ", grid_.height, "x", grid_.width,
               " image in patches of ", cfg_.patch_size, " with stride ", cfg_.patch_stride, " has N = ", N);
  IPSNET_CHECK(cfg_.M <= N, "config key 'M': ", cfg_.M, " is larger than N = ", N,
               " (memory buffer bigger than the patches of an image)");
  cfg_.N = N;
  if (train_reader_) {
    n_train_ = cfg_.max_train > 0 ? std::min(cfg_.max_train, train_reader_->size()) : train_reader_->size();
    IPSNET_CHECK(n_train_ >= 1, "the training split of '", cfg_.data_dir, "' has no images");
  }
  if (test_reader_)
    n_test_ = cfg_.max_test > 0 ? std::min(cfg_.max_test, test_reader_->size()) : test_reader_->size();

  // ---- model ----
  IPSNetOptions o;
  o.encoder(cfg_.enc_type).in_channels(cfg_.n_chan_in).n_res_blocks(static_cast<int>(cfg_.n_res_blocks));
  o.transformer(AggregatorOptions()
                    .n_token(cfg_.n_token)
                    .H(cfg_.H)
                    .D(cfg_.D)
                    .D_k(cfg_.D_k)
                    .D_v(cfg_.D_v)
                    .D_inner(cfg_.D_inner)
                    .attn_dropout(cfg_.attn_dropout)
                    .dropout(cfg_.dropout));
  std::vector<TaskSpec> tasks;
  for (const TaskConfig& t : cfg_.tasks) {
    TaskSpec s;
    s.name = t.name;
    s.n_class = t.n_class;
    s.act = t.act_fn == "sigmoid" ? TaskActivation::Sigmoid : TaskActivation::Softmax;
    tasks.push_back(s);
  }
  o.tasks(tasks);
  Generator init_gen(derive_seed(cfg_.seed, kInit));
  dropout_gen_ = Generator(derive_seed(cfg_.seed, kDropout));
  net_ = std::make_shared<IPSNet>(o, init_gen, &dropout_gen_);
  if (cfg_.semantic_diversity_loss) {
    // The dissertation's shared fb: Linear(D_v, D, no bias) for per-head semantic outputs.
    net_->transf_->register_module(
        "fb", std::make_shared<Linear>(LinearOptions(cfg_.D_v, cfg_.D).bias(false), init_gen));
  }
  if (!cfg_.pretrained_path.empty()) {
    TensorDict sd = safetensors::load_tensors(cfg_.pretrained_path);
    auto* resnet = dynamic_cast<ResNet*>(net_->encoder_.get());
    IPSNET_CHECK(resnet != nullptr, "pretrained_path: only ResNet encoders load pretrained weights");
    // Keep the fresh conv1 when the channel count differs (1-channel input).
    TensorDict filtered;
    TensorDict own = resnet->state_dict();
    for (const auto& it : sd) {
      if (!own.contains(it.first)) continue;  // e.g. fc.* of a full torchvision model
      if (own.at(it.first).shape() != it.second.shape() && it.first == "conv1.weight") continue;
      filtered.insert(it.first, it.second);
    }
    resnet->load_state_dict(filtered, false);
  }
  if (cfg_.freeze != "none") {
    auto* resnet = dynamic_cast<ResNet*>(net_->encoder_.get());
    IPSNET_CHECK(resnet != nullptr, "freeze: only ResNet encoders can be frozen");
    resnet->freeze_backbone(cfg_.freeze == "all" ? 0 : 1);
  }
  if (auto* resnet = dynamic_cast<ResNet*>(net_->encoder_.get())) resnet->set_recompute(cfg_.recompute_activations);
  if (device_.is_cuda()) net_->to(device_);
  if (cfg_.use_pos) pos_ = sinusoidal_positional_encoding(N, cfg_.D, DType::Float32, device_);
  std::vector<std::pair<std::string, Tensor>> params;
  for (const auto& it : net_->named_parameters()) params.emplace_back(it.first, it.second);
  AdamWOptions ao;
  ao.lr = cfg_.lr;
  ao.weight_decay = cfg_.wd;
  ao.exclude_norm_and_bias = cfg_.wd_exclude_norm_bias;
  optim_ = std::make_unique<AdamW>(params, ao);

  if (create_run_dir) {
    std::string name = cfg_.run_name.empty() ? cfg_.dataset + "-" + timestamp() : cfg_.run_name;
    run_dir_ = (fs::path(cfg_.out_dir) / name).string();
    IPSNET_CHECK(!fs::exists(fs::path(run_dir_) / "config.yaml"), "run directory '", run_dir_,
                 "' already holds a run (continue it with --resume, or choose another run_name)");
    std::error_code ec;
    fs::create_directories(run_dir_, ec);
    IPSNET_CHECK(!ec && fs::is_directory(run_dir_), "cannot create the run directory '", run_dir_,
                 "': ", ec.message());
    write_text_atomic((fs::path(run_dir_) / "config.yaml").string(), to_yaml(cfg_));
  }
}

const data::DatasetReader& Trainer::reader(const std::string& split) const {
  const auto& r = split == "train" ? train_reader_ : test_reader_;
  IPSNET_CHECK(r != nullptr, "split '", split, "' is not open (evaluation opens only the split it evaluates: '",
               cfg_.eval_split, "')");
  return *r;
}

int64_t Trainer::steps_per_epoch() const { return (n_train_ + cfg_.B - 1) / cfg_.B; }

std::vector<int64_t> Trainer::epoch_order(int64_t epoch) const {
  Generator g(derive_seed(cfg_.seed, kEpochOrder), static_cast<uint64_t>(epoch));
  return g.permutation(n_train_);
}

IPSOptions Trainer::ips_options(bool training) const {
  IPSOptions o;
  o.M = cfg_.M;
  o.I = cfg_.I;
  o.shuffle = cfg_.shuffle;
  o.instance_shuffle = cfg_.shuffle_style == "instance";
  if (training || cfg_.mask_eval) {
    o.mask_K = cfg_.mask_K;
    o.mask_p = cfg_.mask_p;
  }
  o.dedup_zero = cfg_.dedup_patches;
  o.dedup_identical = cfg_.dedup_patches;
  o.bf16 = cfg_.selection_bf16;
  o.fold_bn = cfg_.fold_bn;
  return o;
}

std::unique_ptr<Trainer::Prepared> Trainer::prepare(const data::DatasetReader& reader,
                                                   const std::vector<int64_t>& ids) const {
  auto p = std::make_unique<Prepared>();
  p->ids = ids;
  const int64_t B = static_cast<int64_t>(ids.size());
  if (cfg_.eager) {
    // Only the first B_seq images are made resident ahead; the selection
    // builds each later sub-batch when it reaches it and drops each one once
    // its selected patches are gathered (eager sequential holds B_seq images).
    const int64_t seq = std::min<int64_t>(cfg_.B_seq, B);
    for (int64_t s = 0; s < B; s += seq) {
      std::vector<int64_t> sub(ids.begin() + s, ids.begin() + std::min(B, s + seq));
      p->eager.push_back(s == 0 ? std::make_unique<EagerSource>(reader, sub, grid_, Device::cpu()) : nullptr);
    }
  } else {
    // Page the records in and verify their checksums ahead of the selection.
    for (int64_t id : ids) (void)reader.region_is_zero(id, 0, 0, 1, 1);
  }
  return p;
}

std::pair<Tensor, Tensor> Trainer::select_batch(const data::DatasetReader& reader, const std::vector<int64_t>& ids,
                                                bool training, Generator& gen, Prepared* prepared) {
  IPSOptions opt = ips_options(training);
  const int64_t B = static_cast<int64_t>(ids.size());
  if (!cfg_.eager) {
    LazySource src(reader, ids, grid_, device_);
    SelectionResult r = ips_select(*net_, src, pos_, opt, gen);
    std::vector<int64_t> img, pat;
    const int64_t* ip = r.idx.data<int64_t>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < r.idx.size(1); ++j) {
        img.push_back(b);
        pat.push_back(ip[b * r.idx.size(1) + j]);
      }
    return {src.get(img, pat), r.idx};
  }
  // Eager: the batch (or B_seq images of it at a time) resident on the device.
  const int64_t seq = std::min<int64_t>(cfg_.B_seq, B);
  std::vector<Tensor> patches, idxs;
  Generator start = gen;
  std::unique_ptr<Prepared> own;
  if (!prepared || prepared->eager.empty()) {
    own = prepare(reader, ids);
    prepared = own.get();
  }
  for (int64_t s = 0, k = 0; s < B; s += seq, ++k) {
    std::vector<int64_t> sub(ids.begin() + s, ids.begin() + std::min(B, s + seq));
    // A shared (batch) permutation is the same for every sub-batch.
    if (!opt.instance_shuffle) gen = start;
    std::unique_ptr<EagerSource>& slot = prepared->eager[static_cast<size_t>(k)];
    if (!slot) slot = std::make_unique<EagerSource>(reader, sub, grid_, Device::cpu());
    EagerSource& src = *slot;
    if (device_.is_cuda()) src.to(device_);
    SelectionResult r = ips_select(*net_, src, pos_, opt, gen);
    std::vector<int64_t> img, pat;
    const int64_t* ip = r.idx.data<int64_t>();
    const int64_t m = r.idx.size(1);
    for (int64_t b = 0; b < static_cast<int64_t>(sub.size()); ++b)
      for (int64_t j = 0; j < m; ++j) {
        img.push_back(b);
        pat.push_back(ip[b * m + j]);
      }
    patches.push_back(src.get(img, pat));
    idxs.push_back(r.idx);
    slot.reset();  // the sub-batch's patches are no longer needed
  }
  return {ops::cat(patches, 0), ops::cat(idxs, 0)};
}

Tensor Trainer::forward_loss(const Tensor& patches, const Tensor& idx, const std::map<std::string, Tensor>& targets,
                             std::map<std::string, Tensor>* logits_out, std::map<std::string, double>* task_losses) {
  const int64_t B = idx.size(0), M = idx.size(1);
  Tensor emb = net_->encode(patches).reshape({B, M, cfg_.D});
  if (pos_.defined()) emb = ops::add(emb, positions_of(pos_, idx));
  Tensor tokens, heads;
  if (cfg_.semantic_diversity_loss) {
    auto th = net_->aggregate_with_heads(emb);
    tokens = th.first;
    heads = th.second;  // (B, H, n_token, D_v)
  } else {
    tokens = net_->aggregate(emb);
  }
  std::map<std::string, Tensor> logits = net_->heads(tokens);
  Tensor loss;
  for (const TaskSpec& t : net_->tasks()) {
    Tensor l = net_->task_loss(t, logits.at(t.name), targets.at(t.name));
    if (task_losses) (*task_losses)[t.name] = l.item();
    loss = loss.defined() ? ops::add(loss, l) : l;
  }
  loss = ops::mul(loss, 1.0 / static_cast<double>(net_->tasks().size()));
  if (cfg_.semantic_diversity_loss && heads.defined()) {
    const int64_t H = heads.size(1);
    // Diversity: mean over head pairs i<j of the batch mean of cos(vec O_i, vec O_j).
    Tensor flat = heads.reshape({B, H, -1});
    Tensor norm = ops::sqrt(ops::add(ops::sum(ops::square(flat), {2}, true), 1e-12));
    Tensor unit = ops::div(flat, norm);
    Tensor gram = ops::matmul(unit, unit.transpose(1, 2));  // (B, H, H)
    std::vector<float> upper(static_cast<size_t>(H * H), 0.0f);
    for (int64_t i = 0; i < H; ++i)
      for (int64_t j = i + 1; j < H; ++j) upper[static_cast<size_t>(i * H + j)] = 1.0f;
    Tensor mask = Tensor::from_vector(upper, {H, H}, gram.device());
    double pairs = static_cast<double>(H * (H - 1) / 2);
    Tensor l_div = ops::mul(ops::sum(ops::mul(gram, mask)), 1.0 / (pairs * static_cast<double>(B)));
    // Semantic: every head's output through the shared fb, MLP and task heads.
    auto fb = std::dynamic_pointer_cast<Linear>(net_->transf_->child("fb"));
    Tensor l_sem;
    for (int64_t h = 0; h < H; ++h) {
      Tensor oh = heads.select(1, h);  // (B, n_token, D_v)
      Tensor th = net_->transf_->mlp_->forward(fb->forward(oh));
      std::map<std::string, Tensor> lh = net_->heads(th);
      Tensor lsum;
      for (const TaskSpec& t : net_->tasks()) {
        Tensor l = net_->task_loss(t, lh.at(t.name), targets.at(t.name));
        lsum = lsum.defined() ? ops::add(lsum, l) : l;
      }
      lsum = ops::mul(lsum, 1.0 / static_cast<double>(net_->tasks().size()));
      l_sem = l_sem.defined() ? ops::add(l_sem, lsum) : lsum;
    }
    l_sem = ops::mul(l_sem, 1.0 / static_cast<double>(H));
    loss = ops::add(loss, ops::add(ops::mul(l_div, cfg_.w_div), ops::mul(l_sem, cfg_.w_sem)));
    if (task_losses) {
      (*task_losses)["_div"] = l_div.item();
      (*task_losses)["_sem"] = l_sem.item();
    }
  }
  if (logits_out) *logits_out = logits;
  return loss;
}

double Trainer::train_step(const std::vector<int64_t>& ids) { return train_step(prepare(*train_reader_, ids)); }

double Trainer::train_step(std::unique_ptr<Prepared> prepared) {
  const std::vector<int64_t> ids = prepared->ids;
  Generator sel_gen(derive_seed(cfg_.seed, kSelect), static_cast<uint64_t>(step_));
  dropout_gen_.set_state(derive_seed(cfg_.seed, kDropout), 0, static_cast<uint64_t>(step_));
  auto t0 = std::chrono::steady_clock::now();
  auto [patches, idx] = select_batch(*train_reader_, ids, true, sel_gen, prepared.get());
  prepared.reset();  // the resident batch is no longer needed
  auto t1 = std::chrono::steady_clock::now();
  std::map<std::string, Tensor> targets = batch_targets(*train_reader_, ids, cfg_.tasks);
  for (auto& kv : targets) kv.second = kv.second.to(device_);
  net_->train();
  optim_->zero_grad();
  std::map<std::string, Tensor> logits;
  std::map<std::string, double> task_losses;
  Tensor loss = forward_loss(patches, idx, targets, &logits, &task_losses);
  double lv = loss.item();
  {
    NoGradGuard ng;
    for (const TaskSpec& t : net_->tasks()) {
      epoch_probs_[t.name].push_back(net_->activate(t, logits.at(t.name).detach()).to(Device::cpu()));
      epoch_targets_[t.name].push_back(targets.at(t.name).to(Device::cpu()));
      epoch_loss_sum_[t.name] += task_losses[t.name] * static_cast<double>(ids.size());
    }
    epoch_images_ += static_cast<int64_t>(ids.size());
  }
  loss.backward();
  std::vector<Tensor> params = net_->parameters();
  if (cfg_.grad_clip > 0) clip_grad_norm(params, cfg_.grad_clip);
  const int64_t total = steps_per_epoch() * cfg_.n_epoch;
  double lr = warmup_cosine_lr(cfg_.lr, step_, steps_per_epoch() * cfg_.n_epoch_warmup, total);
  optim_->step(lr);
  ++step_;
  auto t2 = std::chrono::steady_clock::now();
  last_select_ms_ = std::chrono::duration<double, std::milli>(t1 - t0).count();
  last_train_ms_ = std::chrono::duration<double, std::milli>(t2 - t1).count();
  return lv;
}

EvalResult Trainer::evaluate(const std::string& split, const std::string& predictions_csv) {
  const data::DatasetReader& rd = reader(split);
  const int64_t n = split == "train" ? n_train_ : n_test_;
  NoGradGuard ng;
  const bool was_training = net_->is_training();
  net_->eval();
  EvalResult res;
  std::map<std::string, std::vector<Tensor>> probs, targs;
  std::map<std::string, double> loss_sum;
  std::ofstream csv;
  std::string csv_tmp = predictions_csv + ".tmp";
  if (!predictions_csv.empty()) {
    csv.open(csv_tmp, std::ios::trunc);
    IPSNET_CHECK(csv.good(), "cannot write predictions to '", predictions_csv, "'");
    csv << "image";
    for (const TaskSpec& t : net_->tasks()) {
      csv << "," << t.name << "_pred";
      for (int64_t c = 0; c < t.n_class; ++c) csv << "," << t.name << "_p" << c;
    }
    csv << ",selected_patches\n";
  }
  Progress prog("eval " + split, n, !quiet_);
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t s = 0, bi = 0; s < n; s += cfg_.B, ++bi) {
    std::vector<int64_t> ids;
    for (int64_t i = s; i < std::min(n, s + cfg_.B); ++i) ids.push_back(i);
    Generator gen(derive_seed(cfg_.seed, kEvalSelect), static_cast<uint64_t>(bi));
    auto [patches, idx] = select_batch(rd, ids, false, gen);
    std::map<std::string, Tensor> targets = batch_targets(rd, ids, cfg_.tasks);
    for (auto& kv : targets) kv.second = kv.second.to(device_);
    std::map<std::string, Tensor> logits;
    std::map<std::string, double> tl;
    forward_loss(patches, idx, targets, &logits, &tl);
    std::map<std::string, Tensor> p_cpu;
    for (const TaskSpec& t : net_->tasks()) {
      Tensor p = net_->activate(t, logits.at(t.name)).to(Device::cpu()).contiguous();
      probs[t.name].push_back(p);
      targs[t.name].push_back(targets.at(t.name).to(Device::cpu()));
      loss_sum[t.name] += tl[t.name] * static_cast<double>(ids.size());
      p_cpu[t.name] = p;
    }
    if (csv.is_open()) {
      const int64_t M = idx.size(1);
      std::vector<int64_t> iv = idx.to_vector<int64_t>();
      for (size_t b = 0; b < ids.size(); ++b) {
        csv << ids[b];
        for (const TaskSpec& t : net_->tasks()) {
          std::vector<float> pv = p_cpu[t.name].to_vector<float>();
          const float* row = pv.data() + static_cast<int64_t>(b) * t.n_class;
          if (t.act == TaskActivation::Softmax) {
            csv << "," << (std::max_element(row, row + t.n_class) - row);
          } else {
            csv << ",";
            bool first = true;
            for (int64_t c = 0; c < t.n_class; ++c)
              if (row[c] > 0.5f) {
                csv << (first ? "" : " ") << c;
                first = false;
              }
          }
          for (int64_t c = 0; c < t.n_class; ++c) csv << "," << std::setprecision(9) << row[c];  // full float precision
        }
        csv << ",";
        for (int64_t j = 0; j < M; ++j) csv << (j ? " " : "") << iv[b * static_cast<size_t>(M) + static_cast<size_t>(j)];
        csv << "\n";
      }
    }
    prog.update(static_cast<int64_t>(ids.size()));
  }
  res.images = n;
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double msum = 0, lsum = 0;
  for (const TaskSpec& t : net_->tasks()) {
    const TaskConfig* tc = nullptr;
    for (const TaskConfig& c : cfg_.tasks)
      if (c.name == t.name) tc = &c;
    TaskResult tr;
    tr.loss = n ? loss_sum[t.name] / static_cast<double>(n) : 0;
    tr.metric = n ? compute_metric(tc->metric, ops::cat(probs[t.name], 0), ops::cat(targs[t.name], 0)) : 0;
    res.tasks[t.name] = tr;
    msum += tr.metric;
    lsum += tr.loss;
  }
  res.loss = lsum / static_cast<double>(net_->tasks().size());
  res.mean_metric = msum / static_cast<double>(net_->tasks().size());
  if (csv.is_open()) {
    csv.flush();
    IPSNET_CHECK(csv.good(), "writing '", csv_tmp, "' failed (disk full?)");
    csv.close();
    IPSNET_CHECK(std::rename(csv_tmp.c_str(), predictions_csv.c_str()) == 0, "cannot rename '", csv_tmp, "'");
  }
  net_->train(was_training);
  return res;
}

SelectionResult Trainer::select(const std::string& split, const std::vector<int64_t>& ids, bool score_all) {
  const data::DatasetReader& rd = reader(split);
  for (int64_t i : ids)
    IPSNET_CHECK(i >= 0 && i < rd.size(), "image index ", i, " out of range for the ", split, " split of ", rd.size(),
                 " images");
  IPSOptions opt = ips_options(false);
  opt.score_all = score_all;
  Generator gen(derive_seed(cfg_.seed, kEvalSelect), 0);
  LazySource src(rd, ids, grid_, device_);
  return ips_select(*net_, src, pos_, opt, gen);
}

void Trainer::log_line(const std::string& line) const {
  if (!quiet_) std::fprintf(stderr, "%s\n", line.c_str());
  if (!run_dir_.empty()) append_text((fs::path(run_dir_) / "train.log").string(), line + "\n");
}

void Trainer::write_epoch_metrics(int64_t epoch, const EvalResult& tr, const EvalResult& te, double lr, double seconds,
                                  double peak_mib) const {
  std::string csv_path = (fs::path(run_dir_) / "metrics.csv").string();
  bool header = !fs::exists(csv_path);
  std::ostringstream csv, js;
  if (header) csv << "epoch,split,task,loss,metric_name,metric,lr,seconds,images_per_s,peak_allocated_mib\n";
  js << "{\"epoch\": " << epoch << ", \"lr\": " << lr << ", \"seconds\": " << fmt(seconds, 2)
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
          << "\n";
    }
    auto a = tr.tasks.find(t.name), b = te.tasks.find(t.name);
    js << (first ? "" : ", ") << "\"" << t.name << "\": {\"train_loss\": " << fmt(a != tr.tasks.end() ? a->second.loss : 0, 6)
       << ", \"train_" << t.metric << "\": " << fmt(a != tr.tasks.end() ? a->second.metric : 0, 6)
       << ", \"test_loss\": " << fmt(b != te.tasks.end() ? b->second.loss : 0, 6) << ", \"test_" << t.metric
       << "\": " << fmt(b != te.tasks.end() ? b->second.metric : 0, 6) << "}";
    first = false;
  }
  js << "}}\n";
  append_text(csv_path, csv.str());
  append_text((fs::path(run_dir_) / "metrics.jsonl").string(), js.str());
}

bool Trainer::fit() {
  const int64_t spe = steps_per_epoch();
  if (!quiet_) {
    std::fprintf(stderr, "ipsnet train: %lld train / %lld %s images of %lldx%lld, N = %lld patches of %lld, M = %lld, I = %lld, "
                 "B = %lld, %s loading, device %s, %d threads\nrun directory: %s\n",
                 static_cast<long long>(n_train_), static_cast<long long>(n_test_), cfg_.eval_split.c_str(),
                 static_cast<long long>(grid_.height), static_cast<long long>(grid_.width),
                 static_cast<long long>(grid_.count()), static_cast<long long>(grid_.size),
                 static_cast<long long>(cfg_.M), static_cast<long long>(cfg_.I), static_cast<long long>(cfg_.B),
                 cfg_.eager ? (cfg_.B_seq < cfg_.B ? "eager sequential" : "eager") : "lazy", device_.str().c_str(),
                 num_threads(), run_dir_.c_str());
  }
  std::string last = (fs::path(run_dir_) / "checkpoint_last.safetensors").string();
  std::string best = (fs::path(run_dir_) / "checkpoint_best.safetensors").string();
  while (epoch_ < cfg_.n_epoch) {
    std::vector<int64_t> order = epoch_order(epoch_);
    reset_peak_memory(device_);
    auto t0 = std::chrono::steady_clock::now();
    Progress prog("epoch " + std::to_string(epoch_ + 1) + "/" + std::to_string(cfg_.n_epoch), n_train_, !quiet_);
    prog.update(std::min(n_train_, batch_in_epoch_ * cfg_.B));
    double loss_acc = 0;
    int64_t loss_n = 0;
    auto batch_ids = [&](int64_t bi) {
      return std::vector<int64_t>(order.begin() + bi * cfg_.B, order.begin() + std::min(n_train_, (bi + 1) * cfg_.B));
    };
    // The next batch is prepared on a background thread while this one trains.
    std::future<std::unique_ptr<Prepared>> next;
    for (int64_t bi = batch_in_epoch_; bi < spe; ++bi) {
      std::vector<int64_t> ids = batch_ids(bi);
      std::unique_ptr<Prepared> cur = next.valid() ? next.get() : prepare(*train_reader_, ids);
      if (cfg_.prefetch && bi + 1 < spe)
        next = std::async(std::launch::async, [this, ids = batch_ids(bi + 1)] { return prepare(*train_reader_, ids); });
      auto s0 = std::chrono::steady_clock::now();
      double lv = train_step(std::move(cur));
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s0).count();
      loss_acc += lv;
      ++loss_n;
      batch_in_epoch_ = bi + 1;
      prog.update(static_cast<int64_t>(ids.size()), "loss " + fmt(loss_acc / loss_n, 4));
      if (cfg_.log_every > 0 && step_ % cfg_.log_every == 0) {
        log_line("step " + std::to_string(step_) + " | loss " + fmt(lv, 4) + " | lr " +
                 fmt(warmup_cosine_lr(cfg_.lr, step_ - 1, spe * cfg_.n_epoch_warmup, spe * cfg_.n_epoch), 7) + " | " +
                 fmt(ms, 1) + " ms (select " + fmt(last_select_ms_, 0) + ", train " + fmt(last_train_ms_, 0) +
                 ") | " + fmt(ids.size() * 1000.0 / ms, 1) + " img/s | peak " +
                 fmt(memory_stats(device_).peak_allocated_bytes / 1048576.0, 1) + " MiB");
      }
      if (interrupt_flag().load()) {
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
    double lr = warmup_cosine_lr(cfg_.lr, step_ - 1, spe * cfg_.n_epoch_warmup, spe * cfg_.n_epoch);
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
    if (interrupt_flag().load()) return false;
  }
  return true;
}

EvalResult Trainer::epoch_train_result() const {
  EvalResult r;
  if (epoch_images_ == 0) return r;
  double msum = 0, lsum = 0;
  for (const TaskConfig& t : cfg_.tasks) {
    TaskResult tr;
    tr.loss = epoch_loss_sum_.at(t.name) / static_cast<double>(epoch_images_);
    tr.metric = compute_metric(t.metric, ops::cat(epoch_probs_.at(t.name), 0), ops::cat(epoch_targets_.at(t.name), 0));
    r.tasks[t.name] = tr;
    msum += tr.metric;
    lsum += tr.loss;
  }
  r.loss = lsum / static_cast<double>(cfg_.tasks.size());
  r.mean_metric = msum / static_cast<double>(cfg_.tasks.size());
  r.images = epoch_images_;
  return r;
}

void Trainer::save_checkpoint(const std::string& path) const {
  TensorDict td = net_->state_dict();
  for (const auto& [name, t] : optim_->state()) td.insert("optimizer." + name, t);
  std::map<std::string, std::string> meta;
  meta["format"] = "ipsnet-checkpoint-1";
  meta["config"] = to_yaml(cfg_);
  meta["epoch"] = std::to_string(epoch_);
  meta["batch_in_epoch"] = std::to_string(batch_in_epoch_);
  meta["step"] = std::to_string(step_);
  meta["optimizer_step"] = std::to_string(optim_->step_count());
  std::ostringstream bm;
  bm << std::setprecision(17) << best_metric_;
  meta["best_metric"] = bm.str();
  safetensors::save(path, td, meta);
}

void Trainer::load_checkpoint(const std::string& path, bool with_optimizer) {
  safetensors::File f = safetensors::load(path);
  TensorDict model, optim;
  for (const auto& it : f.tensors) {
    if (it.first.rfind("optimizer.", 0) == 0)
      optim.insert(it.first.substr(10), it.second);
    else
      model.insert(it.first, it.second);
  }
  net_->load_state_dict(model, true);
  auto num = [&](const char* k) -> int64_t {
    auto it = f.metadata.find(k);
    return it == f.metadata.end() ? 0 : std::stoll(it->second);
  };
  if (with_optimizer) {
    std::vector<std::pair<std::string, Tensor>> st;
    for (const auto& it : optim) st.emplace_back(it.first, it.second.to(device_));
    optim_->load_state(st, num("optimizer_step"));
    epoch_ = num("epoch");
    batch_in_epoch_ = num("batch_in_epoch");
    step_ = num("step");
    auto it = f.metadata.find("best_metric");
    if (it != f.metadata.end()) best_metric_ = std::stod(it->second);
  }
}

std::unique_ptr<Trainer> Trainer::resume(const std::string& run_dir, bool quiet) {
  std::string ckpt = (fs::path(run_dir) / "checkpoint_last.safetensors").string();
  IPSNET_CHECK(fs::exists(ckpt), "--resume: '", run_dir, "' has no checkpoint_last.safetensors");
  safetensors::File f = safetensors::load(ckpt);
  auto it = f.metadata.find("config");
  IPSNET_CHECK(it != f.metadata.end(), "--resume: '", ckpt, "' is not an ipsnet training checkpoint (no config)");
  Config cfg = parse_config(it->second, ckpt);
  std::unique_ptr<Trainer> t(new Trainer(cfg, quiet, 0));
  t->run_dir_ = run_dir;
  t->load_checkpoint(ckpt, true);
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

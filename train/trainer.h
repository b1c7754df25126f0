// The training loop, for any method on any data source (docs/architecture.md):
// epochs, the learning-rate schedule, the optimizer, gradient clipping, metrics,
// evaluation after every epoch, checkpoints with exact resume, progress,
// prefetch of the next batch. It opens the data and builds the method the
// config names; it knows neither's insides.
#pragma once
#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/source.h"
#include "engine/common/files.h"
#include "engine/engine.h"
#include "train/batch.h"
#include "train/config.h"
#include "train/data_parallel.h"
#include "train/method.h"
#include "train/proxy_attention.h"

namespace ipsnet {
namespace train {

struct TaskResult {
  double loss = 0;
  double metric = 0;
};

struct EvalResult {
  std::map<std::string, TaskResult> tasks;  // by task name
  double loss = 0;                          // mean over tasks
  double mean_metric = 0;                   // mean over tasks (the "best" checkpoint criterion)
  int64_t images = 0;
  double seconds = 0;
};

/// Set by SIGINT: the trainer saves a resumable checkpoint and stops.
std::atomic<bool>& interrupt_flag();

/// The learning rate of every optimizer step, the only place it is computed.
/// kind "cosine" (the default, SPEC section 3): linear warm-up from 0 over the
/// warm-up steps, then cosine decay to 0.001 lr at the last. "constant": the
/// warm-up, then lr. "step": the warm-up, then lr divided by 10 once for each
/// epoch in decrease_at that the step's epoch has reached (epochs counted from
/// 0: decrease_at {250} keeps lr for the first 250 epochs; the original ATS's
/// Keras LearningRateScheduler).
struct Schedule {
  double lr = 0;
  int64_t warmup_steps = 0, total_steps = 0;
  std::string kind = "cosine";  // config key lr_schedule: cosine | constant | step
  int64_t steps_per_epoch = 1;
  std::vector<int64_t> decrease_at;  // config key decrease_lr_at (kind "step")
  double at(int64_t step) const;
};

class Trainer {
 public:
  /// Opens the data, builds the method. A new run directory under cfg.out_dir
  /// (cfg.run_name, or <dataset>-<timestamp>). quiet: no progress bars (tests).
  explicit Trainer(Config cfg, bool quiet = false);
  /// Continues the run in run_dir from its last checkpoint, exactly: the
  /// metrics files are cut back to the checkpoint's epoch and the partial
  /// epoch's train metrics come from the checkpoint. overrides ("key=value")
  /// may only change how it runs (threads, device, log_every, prefetch);
  /// any other key is refused in one line. The run directory is locked.
  static std::unique_ptr<Trainer> resume(const std::string& run_dir, bool quiet = false,
                                         const std::vector<std::string>& overrides = {});
  /// Loads a checkpoint's model for evaluation: the config stored in the
  /// checkpoint (or the YAML file config_path, which is required for weights
  /// without one, e.g. converted from PyTorch, and wins when given), then
  /// `overrides` ("key=value": data_dir, device, max_test, patch_size,
  /// patch_stride, ...). Opens only the split cfg.eval_split.
  static std::unique_ptr<Trainer> from_checkpoint(const std::string& checkpoint,
                                                  const std::vector<std::string>& overrides, bool quiet = false,
                                                  const std::string& config_path = "");

  /// Trains to cfg.n_epoch (or until interrupted). Returns false when interrupted.
  bool fit();
  /// One optimizer step on the given training images; returns the total loss.
  double train_step(const std::vector<int64_t>& ids);
  /// A batch with its host-side work done ahead (safe on a background thread).
  std::unique_ptr<Batch> prepare(const data::DataSource& source, const std::vector<int64_t>& ids) const;
  double train_step(std::unique_ptr<Batch> batch);
  /// Evaluates a split. predictions_csv: optional path for per-image rows.
  EvalResult evaluate(const std::string& split, const std::string& predictions_csv = "");
  /// Where the method looks in the given images of a split (eval mode).
  Attention attend(const std::string& split, const std::vector<int64_t>& ids, bool all_scores);
  /// The training images of an epoch in visiting order (seeded by epoch).
  std::vector<int64_t> epoch_order(int64_t epoch) const;
  /// Saves a checkpoint with optimizer state, epoch and position. In a
  /// data-parallel run every rank calls it (the partial epoch's metrics are
  /// gathered) and rank 0 writes.
  void save_checkpoint(const std::string& path) const;
  /// fit() saves a checkpoint and returns false after `steps` more optimizer
  /// steps (train --stop-after: runs cut to a scheduler's time limit).
  void stop_after(int64_t steps) { stop_at_step_ = step_ + steps; }
  /// True when fit() stopped because of stop_after (not a signal).
  bool stopped_as_asked() const { return stop_at_step_ > 0 && step_ >= stop_at_step_; }
  /// Proxy steps done so far (proxy_attention).
  int64_t proxy_steps_done() const { return proxy_cycles_; }
  /// The training set as the trainer draws batches from it: the training
  /// split, or with proxy_attention the split with its proxy images.
  const data::DataSource& train_data() const;
  /// The ranks of a data-parallel run (one process: a world of one).
  const DataParallel& data_parallel() const { return *dp_; }

  const Config& config() const { return cfg_; }
  Method& method() { return *method_; }
  const Method& method() const { return *method_; }
  Module& model() { return method_->model(); }
  /// The open split "train" or cfg.eval_split (evaluation opens only that one).
  const data::DataSource& source(const std::string& split) const;
  const std::string& run_dir() const { return run_dir_; }
  int64_t global_step() const { return step_; }
  int64_t epoch() const { return epoch_; }
  Device device() const { return device_; }
  const Schedule& schedule() const { return schedule_; }
  /// Epoch results so far (train, test) — for tests.
  const std::vector<std::pair<EvalResult, EvalResult>>& history() const { return history_; }

 private:
  Trainer(Config cfg, bool quiet, int /*no run dir*/, bool eval_only = false) : cfg_(std::move(cfg)), quiet_(quiet) {
    setup(false, eval_only);
  }
  /// eval_only: open only the split cfg_.eval_split (no training data needed).
  void setup(bool create_run_dir, bool eval_only = false);
  void open_data(bool eval_only);
  void load_checkpoint(const std::string& path, bool with_optimizer);
  /// Cuts metrics.csv / metrics.jsonl back to the rows of epochs <= epoch_.
  void truncate_metrics() const;
  /// Probabilities (softmax or sigmoid per task) of a method's logits, CPU.
  std::map<std::string, Tensor> probabilities(const MethodOutput& out) const;
  void log_line(const std::string& line) const;
  void write_epoch_metrics(int64_t epoch, const EvalResult& train, const EvalResult& test, double lr,
                           double seconds, double peak_mib) const;
  EvalResult epoch_train_result() const;
  /// The current epoch's train predictions, targets and loss sums of every
  /// rank (collective in a data-parallel run; one process: its own).
  struct EpochTrainState {
    std::map<std::string, Tensor> probs, targets;
    std::map<std::string, double> loss_sum;
    int64_t images = 0;
  };
  EpochTrainState epoch_train_state() const;
  /// Whether to stop now (a signal on any rank, or stop_after): agreed by all ranks.
  bool should_stop() const;
  int64_t steps_per_epoch() const;
  data::DataSource& train_data_mut();
  /// proxy_attention: runs the next proxy step and puts its images into the set.
  void run_proxy_cycle();
  /// The proxy set of the first `cycles` steps (their stores opened from the run directory).
  void use_proxy_cycles(int64_t cycles);
  /// The optimizer step the learning-rate schedule is read at: the step
  /// itself, or with a proxy set that grew, the same fraction of the epoch on
  /// the first epoch's step grid (so the schedule ends where it was planned).
  int64_t schedule_step() const;

  Config cfg_;
  bool quiet_;
  Device device_;
  std::string run_dir_;
  std::unique_ptr<data::DataSource> train_source_, eval_source_;
  std::unique_ptr<Method> method_;
  std::unique_ptr<Optimizer> optim_;
  Schedule schedule_;
  Generator dropout_gen_;
  int64_t n_train_ = 0, n_eval_ = 0;
  int64_t step_ = 0;            // optimizer steps done
  int64_t epoch_ = 0;           // completed epochs
  int64_t batch_in_epoch_ = 0;  // batches done in the current epoch (resume point)
  double best_metric_ = -1;
  double last_select_ms_ = 0, last_train_ms_ = 0;  // split of the last step's time
  // Train-split metrics of the current epoch, gathered from the training
  // passes themselves (train mode, as the reference reports them).
  std::map<std::string, std::vector<Tensor>> epoch_probs_, epoch_targets_;
  std::map<std::string, double> epoch_loss_sum_;
  int64_t epoch_images_ = 0;
  std::unique_ptr<PathLock> run_lock_;  // held while this process trains in run_dir_
  std::vector<std::pair<EvalResult, EvalResult>> history_;
  std::unique_ptr<DataParallel> dp_;  // made first in setup()
  int64_t stop_at_step_ = 0;          // 0: no planned stop
  // proxy_attention (train/proxy_attention.h)
  int64_t n_base_ = 0;                // training images of the split used (max_train)
  int64_t spe0_ = 1;                  // steps per epoch of the split without proxies
  std::unique_ptr<ProxyTrainSource> proxy_source_;
  std::vector<std::shared_ptr<const ProxyStore>> proxy_stores_;  // cycle k at [k - 1]
  int64_t proxy_cycles_ = 0;          // proxy steps done
  std::string proxy_kind_;            // the explanation kind used
  double last_lr_ = 0;                // the rate of the last optimizer step
};

}  // namespace train
}  // namespace ipsnet

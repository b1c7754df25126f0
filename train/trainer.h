// The IPS training loop (SPEC sections 1, 3, 4): selection, the training
// pass on the selected patches, AdamW with warm-up + cosine, evaluation after
// every epoch, metrics files, checkpoints with exact resume.
#pragma once
#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "engine/engine.h"
#include "models/ips_net.h"
#include "models/ips_selection.h"
#include "train/batch.h"
#include "train/config.h"

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

class Trainer {
 public:
  /// Builds the model and opens the data. run_dir empty: a new run directory
  /// under cfg.out_dir. quiet: no progress bars (tests).
  explicit Trainer(Config cfg, bool quiet = false);
  /// Continues the run in run_dir from its last checkpoint, exactly.
  static std::unique_ptr<Trainer> resume(const std::string& run_dir, bool quiet = false);
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
  /// Host-side work for a batch done ahead of time: eager sources (decoded and
  /// cut images), or for lazy loading the records paged in and checksummed.
  struct Prepared {
    std::vector<int64_t> ids;
    std::vector<std::unique_ptr<EagerSource>> eager;  // one per B_seq sub-batch; later ones built when used
  };
  /// Prepares a batch (safe to run on a background thread).
  std::unique_ptr<Prepared> prepare(const data::DatasetReader& reader, const std::vector<int64_t>& ids) const;
  double train_step(std::unique_ptr<Prepared> prepared);
  /// Evaluates a split. predictions_csv: optional path for per-image rows.
  EvalResult evaluate(const std::string& split, const std::string& predictions_csv = "");
  /// Selection on the given images of a split (eval mode), for attention maps and tests.
  SelectionResult select(const std::string& split, const std::vector<int64_t>& ids, bool score_all);
  /// The training images of an epoch in visiting order (seeded by epoch).
  std::vector<int64_t> epoch_order(int64_t epoch) const;
  /// Saves a checkpoint with optimizer state, epoch and position.
  void save_checkpoint(const std::string& path) const;

  const Config& config() const { return cfg_; }
  IPSNet& net() { return *net_; }
  const data::DatasetReader& reader(const std::string& split) const;
  const PatchGrid& grid() const { return grid_; }
  const std::string& run_dir() const { return run_dir_; }
  int64_t global_step() const { return step_; }
  int64_t epoch() const { return epoch_; }
  Device device() const { return device_; }
  /// Epoch results so far (train, test) — for tests.
  const std::vector<std::pair<EvalResult, EvalResult>>& history() const { return history_; }

 private:
  Trainer(Config cfg, bool quiet, int /*no run dir*/, bool eval_only = false) : cfg_(std::move(cfg)), quiet_(quiet) {
    setup(false, eval_only);
  }
  /// eval_only: open only the split cfg_.eval_split (no training data needed).
  void setup(bool create_run_dir, bool eval_only = false);
  void load_checkpoint(const std::string& path, bool with_optimizer);
  IPSOptions ips_options(bool training) const;
  /// Selected patches (B*M, C, h, w) on the device, their indices (B, M), for a batch.
  std::pair<Tensor, Tensor> select_batch(const data::DatasetReader& reader, const std::vector<int64_t>& ids,
                                         bool training, Generator& gen, Prepared* prepared = nullptr);
  /// Forward of the training pass: logits per task (and the extra losses when enabled).
  Tensor forward_loss(const Tensor& patches, const Tensor& idx, const std::map<std::string, Tensor>& targets,
                      std::map<std::string, Tensor>* logits, std::map<std::string, double>* task_losses);
  void log_line(const std::string& line) const;
  void write_epoch_metrics(int64_t epoch, const EvalResult& train, const EvalResult& test, double lr,
                           double seconds, double peak_mib) const;
  int64_t steps_per_epoch() const;

  Config cfg_;
  bool quiet_;
  Device device_;
  std::string run_dir_;
  std::unique_ptr<data::DatasetReader> train_reader_, test_reader_;
  PatchGrid grid_;
  Tensor pos_;  // (N, D) or undefined
  std::shared_ptr<IPSNet> net_;
  std::unique_ptr<AdamW> optim_;
  Generator dropout_gen_;
  int64_t n_train_ = 0, n_test_ = 0;
  int64_t step_ = 0;         // optimizer steps done
  int64_t epoch_ = 0;        // completed epochs
  int64_t batch_in_epoch_ = 0;  // batches done in the current epoch (resume point)
  double best_metric_ = -1;
  double last_select_ms_ = 0, last_train_ms_ = 0;  // split of the last step's time
  // Train-split metrics of the current epoch, gathered from the training
  // passes themselves (train mode, as the reference reports them).
  std::map<std::string, std::vector<Tensor>> epoch_probs_, epoch_targets_;
  std::map<std::string, double> epoch_loss_sum_;
  int64_t epoch_images_ = 0;
  EvalResult epoch_train_result() const;
  std::vector<std::pair<EvalResult, EvalResult>> history_;
};

}  // namespace train
}  // namespace ipsnet

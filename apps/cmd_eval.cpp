// `ipsnet eval`: per-task metrics of a checkpoint on a dataset, and a predictions CSV.
#include <cstdint>
#include <cstdio>

#include "apps/args.h"
#include "apps/command.h"
#include "engine/common/files.h"
#include "train/trainer.h"

namespace ipsnet {
namespace app {
namespace {

int run_eval(const std::vector<std::string>& args) {
  ArgParser p("eval", "Evaluate a checkpoint: per-task metrics and a predictions CSV.");
  p.add_option("checkpoint", "", "checkpoint written by `ipsnet train` (RUN_DIR/checkpoint_best.safetensors) or by "
                                 "scripts/import_torch_weights.py");
  p.add_option("config", "", "YAML config of the model, for weights without an embedded one (e.g. from PyTorch); "
                             "when given it replaces the checkpoint's config. Its architecture must match the tensors");
  p.add_option("data", "", "dataset directory (default: the one the checkpoint was trained on)");
  p.add_option("split", "test", "test | train");
  p.add_option("device", "", "auto | cpu | cuda[:N]");
  p.add_option("predictions", "", "write per-image predictions here (CSV: image, per task the prediction and "
                                   "probabilities, the selected patch indices)");
  p.add_option("max-images", "0", "evaluate only the first n images (0 = all)");
  p.add_repeatable("set", "override a config key, e.g. --set selection_bf16=true "
                              "(several in one: separate by ';')");
  p.add_flag("quiet", "no progress bar");
  if (!p.parse(args)) return 0;
  IPSNET_CHECK(p.is_set("checkpoint"), "eval: --checkpoint is required");
  std::string split = p.get_string("split");
  IPSNET_CHECK(split == "test" || split == "train", "eval: --split must be test or train, got '", split, "'");
  std::vector<std::string> overrides;
  if (p.is_set("data")) overrides.push_back("data_dir=" + p.get_string("data"));
  if (p.is_set("device")) overrides.push_back("device=" + p.get_string("device"));
  const int64_t max_images = p.get_int64("max-images", 0, INT64_MAX);
  if (split == "train") overrides.push_back("max_train=" + std::to_string(max_images));
  else overrides.push_back("max_test=" + std::to_string(max_images));
  overrides.push_back("eval_split=" + split);
  for (const std::string& s : p.get_all("set"))
    for (const std::string& one : split_assignments(s)) overrides.push_back(one);
  std::unique_ptr<train::Trainer> t;
  try {
    t = train::Trainer::from_checkpoint(p.get_string("checkpoint"), overrides, p.get_flag("quiet"),
                                        p.get_string("config"));
  } catch (const Error& e) {
    // The loader names every missing, unexpected or mis-shaped tensor; say which side the model came from.
    if (p.is_set("config") && (std::string(e.what()).find("load_state_dict") != std::string::npos ||
                               std::string(e.what()).find("does not match the model") != std::string::npos))
      throw Error("eval: the architecture in --config '" + p.get_string("config") + "' does not match the tensors of '" +
                  p.get_string("checkpoint") + "': " + e.what());
    throw;
  }
  // Two evals writing one predictions file: the second stops in one line.
  std::unique_ptr<PathLock> lock;
  if (p.is_set("predictions")) lock = std::make_unique<PathLock>(p.get_string("predictions"), "predictions file");
  train::EvalResult r = t->evaluate(split, p.get_string("predictions"));
  std::printf("split %s, %lld images, %.1f s\n", split.c_str(), static_cast<long long>(r.images), r.seconds);
  for (const auto& tc : t->config().tasks) {
    const auto& tr = r.tasks.at(tc.name);
    std::printf("  %-10s loss %.4f  %s %.4f\n", tc.name.c_str(), tr.loss, tc.metric.c_str(), tr.metric);
  }
  std::printf("  mean metric %.4f\n", r.mean_metric);
  if (p.is_set("predictions")) std::printf("predictions: %s\n", p.get_string("predictions").c_str());
  return 0;
}

CommandRegistrar reg("eval", "evaluate a checkpoint on a dataset (metrics, predictions CSV)", run_eval);

}  // namespace
}  // namespace app
}  // namespace ipsnet

// `ipsnet eval`: per-task metrics of a checkpoint on a dataset, and a predictions CSV.
#include <cstdio>

#include "apps/args.h"
#include "apps/command.h"
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
  p.add_option("set", "", "override a config key, e.g. --set selection_bf16=true "
                          "(several: separate by ';')");
  p.add_flag("quiet", "no progress bar");
  if (!p.parse(args)) return 0;
  IPSNET_CHECK(p.is_set("checkpoint"), "eval: --checkpoint is required");
  std::string split = p.get_string("split");
  IPSNET_CHECK(split == "test" || split == "train", "eval: --split must be test or train, got '", split, "'");
  std::vector<std::string> overrides;
  if (p.is_set("data")) overrides.push_back("data_dir=" + p.get_string("data"));
  if (p.is_set("device")) overrides.push_back("device=" + p.get_string("device"));
  if (split == "train") overrides.push_back("max_train=" + std::to_string(p.get_int64("max-images")));
  else overrides.push_back("max_test=" + std::to_string(p.get_int64("max-images")));
  overrides.push_back("eval_split=" + split);
  if (p.is_set("set"))
    for (const std::string& one : split_assignments(p.get_string("set"))) overrides.push_back(one);
  std::unique_ptr<train::Trainer> t;
  try {
    t = train::Trainer::from_checkpoint(p.get_string("checkpoint"), overrides, p.get_flag("quiet"),
                                        p.get_string("config"));
  } catch (const Error& e) {
    // The loader names every missing, unexpected or mis-shaped tensor; say which side the model came from.
    if (p.is_set("config") && std::string(e.what()).find("load_state_dict") != std::string::npos)
      throw Error("eval: the architecture in --config '" + p.get_string("config") + "' does not match the tensors of '" +
                  p.get_string("checkpoint") + "': " + e.what());
    throw;
  }
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

// `ipsnet train`: IPS training from a YAML config (the reference's keys).
#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>

#include "apps/args.h"
#include "apps/command.h"
#include "engine/common/files.h"
#include "engine/dist/comm.h"
#include "engine/memory/allocator.h"
#include "train/trainer.h"

namespace ipsnet {
namespace app {
namespace {

std::atomic<int> g_signal{0};

int run_train(const std::vector<std::string>& args) {
  ArgParser p("train", "Train an IPS model from a YAML config (the PyTorch reference's keys).");
  p.add_option("config", "", "YAML config file (configs/*.yaml); without it the built-in Megapixel MNIST defaults");
  p.add_repeatable("set", "override a key: --set key=value (several in one: separate by ';')");
  p.add_option("data", "", "dataset directory (same as --set data_dir=DIR)");
  p.add_option("out", "", "directory for run directories (default runs/)");
  p.add_option("device", "", "auto | cpu | cuda[:N] (default: the config's, auto)");
  p.add_option("threads", "", "CPU threads (default: OMP_NUM_THREADS or all cores)");
  p.add_option("resume", "", "continue the run in this run directory from its last checkpoint (with its saved "
                             "configuration; --threads, --device and --set of threads, device, log_every, prefetch "
                             "may change how it runs)");
  p.add_option("stop-after", "", "save a resumable checkpoint and stop after this many optimizer steps of this "
                                 "run (a scheduler's time limit; exit 0)");
  p.add_flag("quiet", "no progress bars");
  p.set_epilog(
      "The effective configuration is printed at start and saved as RUN_DIR/config.yaml; metrics go to\n"
      "RUN_DIR/metrics.csv and metrics.jsonl, checkpoints to RUN_DIR/checkpoint_{last,best}.safetensors.\n"
      "Ctrl-C or SIGTERM saves a resumable checkpoint (a second one leaves at once).\n"
      "Proxy Attention (docs/proxy_attention.md): a proxy_attention: section, e.g.\n"
      "  --set 'method=cnn;n_epoch=6;proxy_attention={schedule: [3, p, 3]}', adds proxy steps whose images\n"
      "go to RUN_DIR/proxy/cycle_<k>/ (images.npy, origin.csv, sheet.png). Example:\n"
      "  ipsnet train --config configs/quickstart.yaml --data data/mm500");
  if (!p.parse(args)) return 0;
  // The first SIGINT/SIGTERM finishes the step and saves a checkpoint; a second
  // one removes the temporaries and leaves (engine/common/files.h).
  set_interrupt_handler([](int sig) {
    g_signal = sig;
    train::interrupt_flag() = true;
  });
  if (p.is_set("threads")) p.get_int64("threads", 0, kMaxThreads);
  std::vector<std::string> sets;
  for (const std::string& s : p.get_all("set"))
    for (const std::string& one : split_assignments(s)) sets.push_back(one);
  std::unique_ptr<train::Trainer> trainer;
  if (p.is_set("resume")) {
    for (const char* o : {"config", "data", "out"})
      IPSNET_CHECK(!p.is_set(o), "--resume continues a run with the configuration saved in it; --", o,
                   " cannot change it (start a new run instead)");
    std::vector<std::string> overrides;
    if (p.is_set("threads")) overrides.push_back("threads=" + p.get_string("threads"));
    if (p.is_set("device")) overrides.push_back("device=" + p.get_string("device"));
    overrides.insert(overrides.end(), sets.begin(), sets.end());
    trainer = train::Trainer::resume(p.get_string("resume"), p.get_flag("quiet"), overrides);
    if (trainer->data_parallel().writer())
      std::fprintf(stderr, "resuming %s at epoch %lld, step %lld\n", trainer->run_dir().c_str(),
                 static_cast<long long>(trainer->epoch()), static_cast<long long>(trainer->global_step()));
  } else {
    train::Config cfg = p.is_set("config") ? train::load_config(p.get_string("config")) : train::parse_config("", "defaults");
    if (p.is_set("data")) train::apply_override(cfg, "data_dir=" + p.get_string("data"));
    if (p.is_set("out")) train::apply_override(cfg, "out_dir=" + p.get_string("out"));
    if (p.is_set("device")) train::apply_override(cfg, "device=" + p.get_string("device"));
    if (p.is_set("threads")) train::apply_override(cfg, "threads=" + p.get_string("threads"));
    for (const std::string& one : sets) train::apply_override(cfg, one);
    train::validate(cfg);
    if (!p.get_flag("quiet") && dist::world().rank() == 0)  // a data-parallel run prints once
      std::fprintf(stderr, "effective configuration:\n%s", train::to_table(cfg).c_str());
    trainer = std::make_unique<train::Trainer>(cfg, p.get_flag("quiet"));
  }
  if (p.is_set("stop-after")) trainer->stop_after(p.get_int64("stop-after", 1, int64_t(1) << 50));
  bool done = trainer->fit();
  if (!done && trainer->stopped_as_asked() && g_signal.load() == 0) {
    if (trainer->data_parallel().writer())
      std::fprintf(stderr, "ipsnet train: stopped after step %lld as asked (--stop-after); resume with `ipsnet train "
                           "--resume %s`\n",
                   static_cast<long long>(trainer->global_step()), trainer->run_dir().c_str());
    return 0;
  }
  if (!done) {
    const int sig = g_signal.load();
    std::fprintf(stderr, "ipsnet train: %s; resume with `ipsnet train --resume %s`\n",
                 sig == SIGTERM ? "terminated (SIGTERM)" : "interrupted", trainer->run_dir().c_str());
    return 128 + (sig ? sig : SIGINT);
  }
  if (trainer->data_parallel().writer()) std::printf("%s\n", trainer->run_dir().c_str());
  return 0;
}

CommandRegistrar reg("train", "train an IPS model from a YAML config", run_train);

}  // namespace
}  // namespace app
}  // namespace ipsnet

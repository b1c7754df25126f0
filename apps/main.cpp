// ipsnet: Iterative Patch Selection for very large images.
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "apps/args.h"
#include "apps/command.h"
#include "engine/common/error.h"
#include "engine/common/files.h"
#include "engine/dist/comm.h"

namespace ipsnet {
namespace app {

std::vector<Command>& command_table() {
  static std::vector<Command> table;
  return table;
}

namespace {
void print_help() {
  std::printf(
      "ipsnet %s - Iterative Patch Selection for very large images\n\n"
      "usage: ipsnet <command> [options]\n\ncommands:\n",
      IPSNET_VERSION);
  auto table = command_table();
  std::sort(table.begin(), table.end(),
            [](const Command& a, const Command& b) { return a.name < b.name; });
  for (const auto& c : table) std::printf("  %-18s %s\n", c.name.c_str(), c.summary.c_str());
  std::printf("\nRun `ipsnet <command> --help` for the options of a command.\n");
}
}  // namespace

}  // namespace app
}  // namespace ipsnet

int main(int argc, char** argv) {
  using namespace ipsnet::app;
  using ipsnet::app::kMaxThreads;
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h" ||
      std::string(argv[1]) == "help") {
    print_help();
    return argc < 2 ? 1 : 0;
  }
  if (std::string(argv[1]) == "--version") {
    std::printf("ipsnet %s\n", IPSNET_VERSION);
    return 0;
  }
  std::string name = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  // SIGINT/SIGTERM go to one watcher thread that removes every temporary
  // (engine/common/files.h); `train` turns the first one into a checkpoint.
  ipsnet::install_signal_cleanup();
  // libgomp starts OMP_NUM_THREADS threads at the first parallel loop and
  // crashes for absurd counts: refuse them here, in one line.
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    char* end = nullptr;
    errno = 0;
    long long v = std::strtoll(env, &end, 10);
    if (*env && (errno != 0 || *end != '\0' || v < 1 || v > kMaxThreads)) {
      std::fprintf(stderr, "ipsnet %s: error: OMP_NUM_THREADS='%s': expected a thread count in 1..%d\n", name.c_str(),
                   env, kMaxThreads);
      return 2;
    }
  }
  // The ranks of a data-parallel run, from the launcher (mpirun, or the file
  // rendezvous); a world of one otherwise (engine/dist/comm.h).
  try {
    ipsnet::dist::init(&argc, &argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ipsnet %s: error: %s\n", name.c_str(), e.what());
    return 2;
  }
  ipsnet::dist::Comm& world = ipsnet::dist::world();
  // An error on one rank stops them all (the others would wait for it).
  auto fail = [&](const char* what) {
    const std::string line = "ipsnet " + name + ": error: " + ipsnet::dist::rank_prefix() + what;
    if (world.size() > 1) world.abort(line, 2);
    std::fprintf(stderr, "%s\n", line.c_str());
    return 2;
  };
  if (world.size() > 1 && name != "train")
    return fail(("runs as one process; only `ipsnet train` runs on several ranks (this one was started as rank " +
                 std::to_string(world.rank()) + " of " + std::to_string(world.size()) + ")")
                    .c_str());
  for (const auto& c : command_table()) {
    if (c.name != name) continue;
    try {
      const int rc = c.run(args);
      ipsnet::dist::finalize();
      return rc;
    } catch (const ipsnet::Error& e) {
      return fail(e.what());
    } catch (const std::exception& e) {
      return fail(e.what());
    }
  }
  std::fprintf(stderr, "ipsnet: unknown command '%s' (run `ipsnet --help` for the list)\n", name.c_str());
  return 2;
}

// The subcommand table of the `ipsnet` command. Each apps/cmd_*.cpp registers
// one subcommand with a static `CommandRegistrar`.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace ipsnet {
namespace app {

/// args: the arguments after the subcommand name. Returns the exit code.
using CommandFn = std::function<int(const std::vector<std::string>& args)>;

struct Command {
  std::string name;
  std::string summary;
  CommandFn run;
};

std::vector<Command>& command_table();

struct CommandRegistrar {
  CommandRegistrar(const std::string& name, const std::string& summary, CommandFn fn) {
    command_table().push_back({name, summary, std::move(fn)});
  }
};

}  // namespace app
}  // namespace ipsnet

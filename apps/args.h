// A small long-option parser shared by the `ipsnet` subcommands.
//
// Usage:
//   ipsnet::app::ArgParser p("generate-data", "Generate Megapixel MNIST.");
//   p.add_option("n-train", "5000", "images in the training split");
//   p.add_flag("no-noise", "do not add noise");
//   p.add_positional("OUT_DIR", "output directory");
//   if (!p.parse(args)) return 0;            // false: --help was printed
//   int64_t n = p.get_int64("n-train");
//
// Accepted syntax: `--name value`, `--name=value`, `--flag`, `--flag=true|false`,
// `-h`/`--help`, and `--` to end options. Option names may be written with
// '-' or '_' (`--n_train` == `--n-train`, as in the reference Python tools).
// Every error throws ipsnet::Error with one line naming the option and the
// expected value: unknown options suggest the nearest known name (edit
// distance), missing/extra positionals name the expected arguments.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ipsnet {
namespace app {

/// The largest thread count any command accepts (--threads, OMP_NUM_THREADS).
constexpr int kMaxThreads = 1024;

class ArgParser {
 public:
  /// command: the subcommand name (for messages); summary: one line for --help.
  ArgParser(std::string command, std::string summary);

  /// Declares `--name VALUE` with a default ("" means no default: get_* on an
  /// unset option without default returns "" / throws for typed getters).
  void add_option(const std::string& name, const std::string& default_value, const std::string& help);
  /// Declares `--name VALUE` that may be given several times (get_all).
  void add_repeatable(const std::string& name, const std::string& help);
  /// Declares a boolean `--name` (default false).
  void add_flag(const std::string& name, const std::string& help);
  /// Declares a required positional argument (in order).
  void add_positional(const std::string& name, const std::string& help);
  /// Text appended at the end of --help (examples, notes).
  void set_epilog(const std::string& text) { epilog_ = text; }

  /// Parses args. Returns false when --help was requested (help already printed
  /// to stdout); throws ipsnet::Error on any bad input.
  bool parse(const std::vector<std::string>& args);

  /// The --help text.
  std::string help() const;

  /// True when the option was given on the command line (not just defaulted).
  bool is_set(const std::string& name) const;
  std::string get_string(const std::string& name) const;
  int64_t get_int64(const std::string& name) const;
  /// get_int64 checked against [lo, hi]: one line naming the option and range.
  int64_t get_int64(const std::string& name, int64_t lo, int64_t hi) const;
  /// Every value of a repeatable option, in command-line order.
  std::vector<std::string> get_all(const std::string& name) const;
  double get_double(const std::string& name) const;
  bool get_flag(const std::string& name) const;
  /// The i-th positional argument (declared order).
  const std::string& positional(size_t i) const;

  /// Levenshtein distance, exposed for tests.
  static size_t edit_distance(const std::string& a, const std::string& b);

 private:
  struct Option {
    std::string name, default_value, help;
    bool is_flag = false;
    bool repeatable = false;
    bool set = false;
    std::string value;
    std::vector<std::string> values;  // repeatable options: every value
  };
  const Option& find(const std::string& name) const;
  Option* lookup(const std::string& name);

  std::string command_, summary_, epilog_;
  std::vector<Option> options_;
  std::vector<std::pair<std::string, std::string>> positional_decl_;
  std::vector<std::string> positionals_;
};

/// "k1=v1;k2=v2" -> {"k1=v1", "k2=v2"} (empty parts dropped): the --set syntax.
std::vector<std::string> split_assignments(const std::string& all);

}  // namespace app
}  // namespace ipsnet

#include "apps/args.h"

#include "engine/common/strings.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "engine/common/error.h"

namespace ipsnet {
namespace app {

namespace {
std::string normalise(std::string name) {
  std::replace(name.begin(), name.end(), '_', '-');
  return name;
}
}  // namespace

ArgParser::ArgParser(std::string command, std::string summary)
    : command_(std::move(command)), summary_(std::move(summary)) {}

void ArgParser::add_option(const std::string& name, const std::string& default_value,
                           const std::string& help) {
  Option o;
  o.name = normalise(name);
  o.default_value = default_value;
  o.help = help;
  options_.push_back(o);
}

void ArgParser::add_repeatable(const std::string& name, const std::string& help) {
  Option o;
  o.name = normalise(name);
  o.help = help + " (repeatable)";
  o.repeatable = true;
  options_.push_back(o);
}

void ArgParser::add_flag(const std::string& name, const std::string& help) {
  Option o;
  o.name = normalise(name);
  o.default_value = "false";
  o.help = help;
  o.is_flag = true;
  options_.push_back(o);
}

void ArgParser::add_positional(const std::string& name, const std::string& help) {
  positional_decl_.emplace_back(name, help);
}

size_t ArgParser::edit_distance(const std::string& a, const std::string& b) {
  return ::ipsnet::edit_distance(a, b);
}

ArgParser::Option* ArgParser::lookup(const std::string& name) {
  for (auto& o : options_)
    if (o.name == name) return &o;
  return nullptr;
}

const ArgParser::Option& ArgParser::find(const std::string& name) const {
  std::string n = normalise(name);
  for (const auto& o : options_)
    if (o.name == n) return o;
  IPSNET_FAIL(command_, ": internal error: option --", n, " was never declared");
}

bool ArgParser::parse(const std::vector<std::string>& args) {
  positionals_.clear();
  for (auto& o : options_) {  // a fresh parse
    o.set = false;
    o.value.clear();
    o.values.clear();
  }
  bool options_done = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (!options_done && (a == "-h" || a == "--help")) {
      std::fputs(help().c_str(), stdout);
      return false;
    }
    if (!options_done && a == "--") {
      options_done = true;
      continue;
    }
    if (options_done || a.size() < 2 || a[0] != '-' || (a[1] != '-' && !(a[1] >= 'a' && a[1] <= 'z'))) {
      // Positional (also negative numbers such as "-1" when they appear alone).
      positionals_.push_back(a);
      continue;
    }
    IPSNET_CHECK(a[1] == '-', command_, ": unknown short option '", a,
                 "' (only long options --name are supported; see --help)");
    std::string body = a.substr(2);
    std::string value;
    bool has_value = false;
    size_t eq = body.find('=');
    if (eq != std::string::npos) {
      value = body.substr(eq + 1);
      body = body.substr(0, eq);
      has_value = true;
    }
    std::string name = normalise(body);
    Option* o = lookup(name);
    if (!o) {
      std::string best;
      size_t best_d = static_cast<size_t>(-1);
      for (const auto& cand : options_) {
        size_t d = edit_distance(name, cand.name);
        if (d < best_d) {
          best_d = d;
          best = cand.name;
        }
      }
      if (!best.empty() && best_d <= std::max<size_t>(2, name.size() / 3))
        IPSNET_FAIL(command_, ": unknown option '--", name, "'; did you mean '--", best, "'?");
      IPSNET_FAIL(command_, ": unknown option '--", name, "' (see `ipsnet ", command_, " --help`)");
    }
    if (o->is_flag) {
      if (has_value) {
        IPSNET_CHECK(value == "true" || value == "false" || value == "1" || value == "0", command_,
                     ": flag --", name, " takes no value or true/false, got '", value, "'");
        value = (value == "true" || value == "1") ? "true" : "false";
      } else {
        value = "true";
      }
    } else if (!has_value) {
      IPSNET_CHECK(i + 1 < args.size(), command_, ": option --", name, " expects a value");
      value = args[++i];
    }
    IPSNET_CHECK(!o->set || o->repeatable || o->is_flag, command_, ": option --", name,
                 " was given twice ('", o->value, "' and '", value, "'); give it once");
    o->value = value;
    o->values.push_back(value);
    o->set = true;
  }
  if (positionals_.size() != positional_decl_.size()) {
    std::string expected;
    for (const auto& p : positional_decl_) expected += " " + p.first;
    if (positionals_.size() < positional_decl_.size())
      IPSNET_FAIL(command_, ": missing argument ", positional_decl_[positionals_.size()].first,
                  " (usage: ipsnet ", command_, " [options]", expected, ")");
    IPSNET_FAIL(command_, ": unexpected argument '", positionals_[positional_decl_.size()],
                "' (usage: ipsnet ", command_, " [options]", expected, ")");
  }
  return true;
}

std::string ArgParser::help() const {
  std::ostringstream os;
  os << "usage: ipsnet " << command_ << " [options]";
  for (const auto& p : positional_decl_) os << " " << p.first;
  os << "\n\n" << summary_ << "\n";
  if (!positional_decl_.empty()) {
    os << "\narguments:\n";
    for (const auto& p : positional_decl_) {
      char buf[64];
      std::snprintf(buf, sizeof(buf), "  %-24s ", p.first.c_str());
      os << buf << p.second << "\n";
    }
  }
  os << "\noptions:\n";
  for (const auto& o : options_) {
    std::string left = "--" + o.name + (o.is_flag ? "" : " VALUE");
    char buf[64];
    std::snprintf(buf, sizeof(buf), "  %-24s ", left.c_str());
    os << buf << o.help;
    if (!o.is_flag && !o.default_value.empty()) os << " (default: " << o.default_value << ")";
    os << "\n";
  }
  os << "  --help                   show this help\n";
  if (!epilog_.empty()) os << "\n" << epilog_ << "\n";
  return os.str();
}

bool ArgParser::is_set(const std::string& name) const { return find(name).set; }

std::string ArgParser::get_string(const std::string& name) const {
  const Option& o = find(name);
  return o.set ? o.value : o.default_value;
}

int64_t ArgParser::get_int64(const std::string& name) const {
  std::string s = get_string(name);
  const Option& o = find(name);
  IPSNET_CHECK(!s.empty(), command_, ": option --", o.name, " needs an integer value");
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  IPSNET_CHECK(errno == 0 && end && *end == '\0', command_, ": option --", o.name,
               " expects an integer, got '", s, "'");
  return static_cast<int64_t>(v);
}

int64_t ArgParser::get_int64(const std::string& name, int64_t lo, int64_t hi) const {
  const std::string s = get_string(name);
  const Option& o = find(name);
  IPSNET_CHECK(!s.empty(), command_, ": option --", o.name, " needs an integer value");
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  IPSNET_CHECK(end && *end == '\0' && end != s.c_str(), command_, ": option --", o.name,
               " expects an integer, got '", s, "'");
  IPSNET_CHECK(errno == 0 && v >= lo && v <= hi, command_, ": option --", o.name, " must be in ", lo, "..", hi,
               ", got '", s, "'");
  return static_cast<int64_t>(v);
}

std::vector<std::string> ArgParser::get_all(const std::string& name) const { return find(name).values; }

double ArgParser::get_double(const std::string& name) const {
  std::string s = get_string(name);
  const Option& o = find(name);
  IPSNET_CHECK(!s.empty(), command_, ": option --", o.name, " needs a number");
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  IPSNET_CHECK(errno == 0 && end && *end == '\0' && std::isfinite(v), command_, ": option --", o.name,
               " expects a number, got '", s, "'", end && *end == '\0' ? " (not finite)" : "");
  return v;
}

bool ArgParser::get_flag(const std::string& name) const {
  const Option& o = find(name);
  IPSNET_CHECK(o.is_flag, command_, ": internal error: --", o.name, " is not a flag");
  return (o.set ? o.value : o.default_value) == "true";
}

const std::string& ArgParser::positional(size_t i) const {
  IPSNET_CHECK(i < positionals_.size(), command_, ": internal error: positional ", i, " out of range");
  return positionals_[i];
}

std::vector<std::string> split_assignments(const std::string& all) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= all.size()) {
    size_t end = all.find(';', start);
    std::string one = all.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (!one.empty()) out.push_back(one);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

}  // namespace app
}  // namespace ipsnet

#include "train/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <sstream>

#include "engine/common/error.h"
#include "engine/common/files.h"
#include "engine/common/strings.h"

namespace ipsnet {
namespace train {

namespace {

enum class Kind { Int, Double, Bool, String, Patch, Tasks, IntList, Section };

struct KeySpec {
  const char* name;
  Kind kind;
  std::function<void(Config&, const YAML::Node&, const std::string&)> set;
  std::function<std::string(const Config&)> get;
};

std::string node_text(const YAML::Node& n) {
  YAML::Emitter e;
  e << YAML::Flow << n;
  return e.c_str();
}

int64_t as_int(const YAML::Node& n, const std::string& key) {
  bool range = false;
  try {
    if (!n.IsScalar()) throw YAML::Exception(YAML::Mark::null_mark(), "");
    std::string s = n.Scalar();
    size_t pos = 0;
    long long v = 0;
    try {
      v = std::stoll(s, &pos);
    } catch (const std::out_of_range&) {
      pos = 0;  // "1e30" or a huge integer: read as a double below
    }
    if (pos != s.size()) {
      size_t dpos = 0;
      double d = std::stod(s, &dpos);  // allow 1e3 written as a float if integral
      if (dpos != s.size() || d != std::floor(d)) throw std::invalid_argument("");
      // Exactly representable in int64 (2^63 itself is not).
      if (!(d >= -9.2e18 && d <= 9.2e18)) {
        range = true;
        throw std::out_of_range("");
      }
      return static_cast<int64_t>(d);
    }
    return v;
  } catch (...) {
    if (range) IPSNET_FAIL("config key '", key, "': ", node_text(n), " is out of the integer range");
    IPSNET_FAIL("config key '", key, "': expected an integer, got ", node_text(n));
  }
}

double as_double(const YAML::Node& n, const std::string& key) {
  bool finite = true;
  try {
    if (!n.IsScalar()) throw std::invalid_argument("");
    std::string s = n.Scalar();
    std::string low = s;
    std::transform(low.begin(), low.end(), low.begin(), ::tolower);
    finite = !(low == ".inf" || low == "+.inf" || low == "-.inf" || low == ".nan");  // YAML's spellings
    if (!finite) throw std::invalid_argument("");
    size_t pos = 0;
    double v = std::stod(s, &pos);
    if (pos != s.size()) throw std::invalid_argument("");
    finite = std::isfinite(v);
    if (!finite) throw std::invalid_argument("");
    return v;
  } catch (...) {
    IPSNET_FAIL("config key '", key, "': expected a ", finite ? "" : "finite ", "number, got ", node_text(n));
  }
}

bool as_bool(const YAML::Node& n, const std::string& key) {
  if (n.IsScalar()) {
    std::string s = n.Scalar();
    std::transform(s.begin(), s.end(), s.begin(), ::tolower);
    if (s == "true" || s == "yes" || s == "on" || s == "1") return true;
    if (s == "false" || s == "no" || s == "off" || s == "0") return false;
  }
  IPSNET_FAIL("config key '", key, "': expected true or false, got ", node_text(n));
}

std::string as_string(const YAML::Node& n, const std::string& key) {
  if (n.IsNull()) return "";
  IPSNET_CHECK(n.IsScalar(), "config key '", key, "': expected a string, got ", node_text(n));
  return n.Scalar();
}

int64_t as_patch(const YAML::Node& n, const std::string& key) {
  if (n.IsSequence()) {
    IPSNET_CHECK(n.size() == 2, "config key '", key, "': expected a size or [h, w], got ", node_text(n));
    int64_t h = as_int(n[0], key), w = as_int(n[1], key);
    IPSNET_CHECK(h == w, "config key '", key, "': ipsnet supports square patches; got [", h, ", ", w, "]");
    return h;
  }
  return as_int(n, key);
}

// An integer or a list of integers (decrease_lr_at: 250 or [250, 400]).
std::vector<int64_t> as_int_list(const YAML::Node& n, const std::string& key) {
  std::vector<int64_t> out;
  if (n.IsNull()) return out;
  if (n.IsScalar()) return {as_int(n, key)};
  IPSNET_CHECK(n.IsSequence(), "config key '", key, "': expected an integer or a list of integers, got ", node_text(n));
  for (size_t i = 0; i < n.size(); ++i) out.push_back(as_int(n[i], key));
  return out;
}

std::string int_list_text(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

std::string fmt_double(double v) {
  std::ostringstream os;
  os << std::setprecision(10) << v;
  return os.str();
}

std::vector<TaskConfig> parse_tasks(const YAML::Node& n, const Config& cfg) {
  IPSNET_CHECK(n.IsMap() || n.IsSequence(), "config key 'tasks': expected a map of tasks (task0: {name: ..., act_fn: ..., metric: ...}), got ",
               node_text(n));
  std::vector<TaskConfig> out;
  int64_t next_id = 0;
  auto one = [&](const YAML::Node& t, const std::string& label) {
    IPSNET_CHECK(t.IsMap(), "config key 'tasks.", label, "': expected a map with name, act_fn, metric");
    TaskConfig tc;
    tc.id = next_id++;
    tc.n_class = cfg.n_class;
    for (auto it = t.begin(); it != t.end(); ++it) {
      IPSNET_CHECK(it->first.IsScalar(), "config key 'tasks.", label, "': a key must be a name, got ",
                   node_text(it->first));
      std::string k = it->first.Scalar();
      std::string path = "tasks." + label + "." + k;
      if (k == "name") tc.name = as_string(it->second, path);
      else if (k == "id") tc.id = as_int(it->second, path);
      else if (k == "act_fn") tc.act_fn = as_string(it->second, path);
      else if (k == "metric") tc.metric = as_string(it->second, path);
      else if (k == "n_class") tc.n_class = as_int(it->second, path);
      else
        IPSNET_FAIL("config key '", path, "' is unknown (a task has name, id, act_fn, metric, n_class)");
    }
    IPSNET_CHECK(!tc.name.empty(), "config key 'tasks.", label, "': a task needs a name");
    out.push_back(tc);
  };
  if (n.IsMap()) {
    for (auto it = n.begin(); it != n.end(); ++it) {
      IPSNET_CHECK(it->first.IsScalar(), "config key 'tasks': a task's key must be a name, got ", node_text(it->first));
      one(it->second, it->first.Scalar());
    }
  } else {
    for (size_t i = 0; i < n.size(); ++i) one(n[i], std::to_string(i));
  }
  return out;
}

// The proxy_attention section, merged into what cfg.proxy holds already (a
// --set of one of its keys keeps the others).
const char* const kProxyKeys[] = {"schedule", "explain", "task", "select", "count", "fraction", "threshold",
                                  "replace", "weight", "mode", "clear_every_step", "sheet_images"};

void apply_proxy_key(ProxyAttentionConfig& p, const std::string& k, const YAML::Node& v) {
  const std::string path = "proxy_attention." + k;
  if (k == "schedule") {
    IPSNET_CHECK(v.IsSequence(), "config key '", path, "': expected a list of epochs and \"p\" (proxy steps) such as ",
                 "[20, \"p\", 19], got ", node_text(v));
    p.schedule.clear();
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i].IsScalar() && (v[i].Scalar() == "p" || v[i].Scalar() == "P")) {
        p.schedule.push_back(ProxyAttentionConfig::kProxyStep);
        continue;
      }
      int64_t e = 0;
      try {
        e = as_int(v[i], path);
      } catch (const Error&) {
        IPSNET_FAIL("config key '", path, "': entry ", i + 1, " is ", node_text(v[i]),
                    ", expected a number of epochs or \"p\" (a proxy step)");
      }
      IPSNET_CHECK(e >= 1 && e <= 1000000, "config key '", path, "': entry ", i + 1, " is ", e,
                   " epochs, expected 1..1000000");
      p.schedule.push_back(e);
    }
  } else if (k == "explain") p.explain = as_string(v, path);
  else if (k == "task") p.task = as_string(v, path);
  else if (k == "select") p.select = as_string(v, path);
  else if (k == "count") p.count = as_int(v, path);
  else if (k == "fraction") p.fraction = as_double(v, path);
  else if (k == "threshold") p.threshold = as_double(v, path);
  else if (k == "replace") p.replace = as_string(v, path);
  else if (k == "weight") p.weight = as_double(v, path);
  else if (k == "mode") p.mode = as_string(v, path);
  else if (k == "clear_every_step") p.clear_every_step = as_bool(v, path);
  else if (k == "sheet_images") p.sheet_images = as_int(v, path);
  else {
    std::string best, known;
    size_t bd = SIZE_MAX;
    for (const char* n : kProxyKeys) {
      known += (known.empty() ? "" : ", ") + std::string(n);
      const size_t d = edit_distance(k, n);
      if (d < bd) {
        bd = d;
        best = n;
      }
    }
    IPSNET_FAIL("config key '", path, "' is unknown (did you mean '", best, "'? the section has ", known, ")");
  }
}

void parse_proxy(Config& c, const YAML::Node& n) {
  IPSNET_CHECK(n.IsMap(), "config key 'proxy_attention': expected a section of keys (schedule: [20, \"p\", 19], ",
               "explain, select, count or fraction, threshold, replace, weight, mode, clear_every_step), got ",
               node_text(n));
  for (auto it = n.begin(); it != n.end(); ++it) {
    IPSNET_CHECK(it->first.IsScalar(), "config key 'proxy_attention': a key must be a name, got ", node_text(it->first));
    apply_proxy_key(c.proxy, it->first.Scalar(), it->second);
  }
  c.proxy.enabled = true;
}

std::string proxy_section_text(const ProxyAttentionConfig& p) {
  if (!p.enabled) return "off";
  return proxy_schedule_text(p.schedule);
}

#define INT_KEY(k) {#k, Kind::Int, [](Config& c, const YAML::Node& n, const std::string& key) { c.k = as_int(n, key); }, [](const Config& c) { return std::to_string(c.k); }}
#define DBL_KEY(k) {#k, Kind::Double, [](Config& c, const YAML::Node& n, const std::string& key) { c.k = as_double(n, key); }, [](const Config& c) { return fmt_double(c.k); }}
#define BOOL_KEY(k) {#k, Kind::Bool, [](Config& c, const YAML::Node& n, const std::string& key) { c.k = as_bool(n, key); }, [](const Config& c) { return std::string(c.k ? "true" : "false"); }}
#define STR_KEY(k) {#k, Kind::String, [](Config& c, const YAML::Node& n, const std::string& key) { c.k = as_string(n, key); }, [](const Config& c) { return c.k; }}
#define INTLIST_KEY(k) {#k, Kind::IntList, [](Config& c, const YAML::Node& n, const std::string& key) { c.k = as_int_list(n, key); }, [](const Config& c) { return int_list_text(c.k); }}
#define PATCH_KEY(k) {#k, Kind::Patch, [](Config& c, const YAML::Node& n, const std::string& key) { c.k = as_patch(n, key); }, [](const Config& c) { return std::to_string(c.k); }}

const std::vector<KeySpec>& specs() {
  static const std::vector<KeySpec> s = {
      STR_KEY(dataset), STR_KEY(data_dir), INT_KEY(n_class), BOOL_KEY(eager), INT_KEY(B), INT_KEY(B_seq),
      INT_KEY(n_epoch), INT_KEY(n_epoch_warmup), DBL_KEY(lr), DBL_KEY(wd), INT_KEY(n_worker),
      BOOL_KEY(pin_memory), BOOL_KEY(use_pos), BOOL_KEY(shuffle), STR_KEY(shuffle_style), BOOL_KEY(is_image),
      INT_KEY(n_chan_in), PATCH_KEY(patch_size), PATCH_KEY(patch_stride), STR_KEY(enc_type),
      STR_KEY(normalize), DBL_KEY(augment_jitter), INT_KEY(augment_translate),
      BOOL_KEY(pretrained), INT_KEY(n_res_blocks), INT_KEY(N), INT_KEY(M), INT_KEY(I), INT_KEY(D), INT_KEY(H),
      INT_KEY(D_k), INT_KEY(D_v), INT_KEY(D_inner), DBL_KEY(attn_dropout), DBL_KEY(dropout), INT_KEY(n_token),
      {"tasks", Kind::Tasks,
       [](Config& c, const YAML::Node& n, const std::string&) { c.tasks = parse_tasks(n, c); },
       [](const Config&) { return std::string("(see below)"); }},
      BOOL_KEY(track_efficiency), INT_KEY(track_epoch), BOOL_KEY(semantic_diversity_loss), DBL_KEY(mask_p),
      INT_KEY(mask_K), BOOL_KEY(attention_map),
      STR_KEY(out_dir), STR_KEY(run_name), STR_KEY(device), INT_KEY(threads), INT_KEY(seed),
      DBL_KEY(grad_clip), STR_KEY(optimizer), DBL_KEY(momentum), STR_KEY(lr_schedule), INTLIST_KEY(decrease_lr_at),
      DBL_KEY(w_div), DBL_KEY(w_sem), BOOL_KEY(mask_eval), BOOL_KEY(wd_exclude_norm_bias),
      INT_KEY(max_train), INT_KEY(max_test), STR_KEY(pretrained_path), STR_KEY(freeze), INT_KEY(eval_every),
      INT_KEY(log_every), BOOL_KEY(prefetch), BOOL_KEY(dedup_patches), BOOL_KEY(fold_bn), BOOL_KEY(sync_batchnorm),
      BOOL_KEY(recompute_activations), BOOL_KEY(selection_bf16), DBL_KEY(bf16_margin), STR_KEY(precision), STR_KEY(eval_split), STR_KEY(method),
      DBL_KEY(cnn_scale), INT_KEY(memory_limit_mib), DBL_KEY(scale), INT_KEY(n_patches),
      DBL_KEY(regularizer_strength), BOOL_KEY(ats_replace), STR_KEY(ats_eval), STR_KEY(ats_features),
      {"proxy_attention", Kind::Section, [](Config& c, const YAML::Node& n, const std::string&) { parse_proxy(c, n); },
       [](const Config& c) { return proxy_section_text(c.proxy); }},
  };
  return s;
}

const KeySpec& find_key(const std::string& key) {
  std::string k = key == "data" ? "data_dir" : key == "clipnorm" ? "grad_clip" : key;
  for (const KeySpec& s : specs())
    if (k == s.name) return s;
  std::string best;
  size_t bd = SIZE_MAX;
  for (const KeySpec& s : specs()) {
    size_t d = edit_distance(key, s.name);
    if (d < bd) {
      bd = d;
      best = s.name;
    }
  }
  IPSNET_FAIL("config key '", key, "' is unknown (did you mean '", best, "'?)");
}

void apply_node(Config& cfg, const std::string& key, const YAML::Node& value) {
  const std::string section = "proxy_attention.";
  if (key.rfind(section, 0) == 0) {  // --set proxy_attention.threshold=0.5
    apply_proxy_key(cfg.proxy, key.substr(section.size()), value);
    cfg.proxy.enabled = true;
    cfg.given["proxy_attention"] = "(set)";
  } else {
    const KeySpec& spec = find_key(key);
    spec.set(cfg, value, spec.name);
    cfg.given[spec.name] = node_text(value);
  }
  // A proxy schedule says how many epochs it trains: n_epoch follows it unless given.
  if (cfg.proxy.enabled && !cfg.given.count("n_epoch") && cfg.proxy.epochs() > 0) cfg.n_epoch = cfg.proxy.epochs();
}

}  // namespace

std::vector<int64_t> ProxyAttentionConfig::step_epochs() const {
  std::vector<int64_t> out;
  int64_t e = 0;
  for (int64_t v : schedule) {
    if (v == kProxyStep)
      out.push_back(e);
    else
      e += v;
  }
  return out;
}

int64_t ProxyAttentionConfig::epochs() const {
  int64_t e = 0;
  for (int64_t v : schedule)
    if (v != kProxyStep) e += v;
  return e;
}

std::string proxy_schedule_text(const std::vector<int64_t>& schedule) {
  std::string s = "[";
  for (size_t i = 0; i < schedule.size(); ++i)
    s += (i ? ", " : "") +
         (schedule[i] == ProxyAttentionConfig::kProxyStep ? std::string("\"p\"") : std::to_string(schedule[i]));
  return s + "]";
}

std::vector<TaskConfig> default_mnist_tasks() {
  return {{"majority", 0, "softmax", "accuracy", 10},
          {"max", 1, "softmax", "accuracy", 10},
          {"top", 2, "softmax", "accuracy", 10},
          {"multi", 3, "sigmoid", "multilabel_accuracy", 10}};
}

std::vector<std::string> known_keys() {
  std::vector<std::string> k;
  for (const KeySpec& s : specs()) k.push_back(s.name);
  return k;
}

Config parse_config(const std::string& text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    IPSNET_FAIL(source, ": not valid YAML: ", e.what());
  }
  Config cfg;
  if (root.IsNull()) {
    cfg.tasks = default_mnist_tasks();
    return cfg;
  }
  IPSNET_CHECK(root.IsMap(), source, ": expected a YAML map of keys at the top level");
  // Every error names the file: a key's own check, or yaml-cpp's (a key that
  // is not a string, a bad conversion).
  try {
    // n_class first: tasks default their class count to it.
    if (root["n_class"]) apply_node(cfg, "n_class", root["n_class"]);
    for (auto it = root.begin(); it != root.end(); ++it) {
      IPSNET_CHECK(it->first.IsScalar(), "a top-level key must be a name, got ", node_text(it->first));
      std::string key = it->first.Scalar();
      if (key == "n_class") continue;
      apply_node(cfg, key, it->second);
    }
  } catch (const YAML::Exception& e) {
    IPSNET_FAIL(source, ": ", e.what());
  } catch (const Error& e) {
    throw Error(source + ": " + e.what());
  }
  if (cfg.tasks.empty()) {
    // An explicit empty list is an error, not a request for the defaults.
    IPSNET_CHECK(!cfg.given.count("tasks"), source, ": config key 'tasks' is empty; give at least one task or leave ",
                 "the key out for the Megapixel MNIST defaults");
    cfg.tasks = default_mnist_tasks();
    for (TaskConfig& t : cfg.tasks) t.n_class = cfg.n_class;  // as given tasks default theirs
  }
  return cfg;
}

Config load_config(const std::string& path) {
  std::error_code ec;
  IPSNET_CHECK(!std::filesystem::is_directory(path, ec), "config file '", path, "' is a directory, not a YAML file");
  IPSNET_CHECK(std::filesystem::exists(path, ec), "config file '", path, "' cannot be read: it does not exist");
  std::ifstream f(path);
  IPSNET_CHECK(f.good(), "config file '", path, "' cannot be read (no permission?)");
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_config(ss.str(), path);
}

void apply_override(Config& cfg, const std::string& assignment) {
  size_t eq = assignment.find('=');
  IPSNET_CHECK(eq != std::string::npos && eq > 0, "--set '", assignment, "': expected key=value");
  std::string key = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  YAML::Node n;
  try {
    n = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    IPSNET_FAIL("--set ", key, ": value '", value, "' is not valid YAML");
  }
  apply_node(cfg, key, n);
  // Tasks take their class count from n_class unless they were given: an
  // override of n_class reaches them as it does in a file.
  if (key == "n_class" && !cfg.given.count("tasks"))
    for (TaskConfig& t : cfg.tasks) t.n_class = cfg.n_class;
}

double estimate_memory_bytes(const Config& c) {
  // Doubles throughout: keys of 1e11 must not overflow the estimate itself.
  const double D = static_cast<double>(c.D), H = static_cast<double>(c.H);
  double classes = 0;
  for (const TaskConfig& t : c.tasks) classes += static_cast<double>(t.n_class);
  const double encoder = c.enc_type == "resnet50" ? 25e6 : c.enc_type == "resnet34" ? 21e6 : 11.7e6;
  const double params = encoder + 2048.0 * D + static_cast<double>(c.n_token) * D +
                        2 * H * static_cast<double>(c.D_k) * D + 2 * H * static_cast<double>(c.D_v) * D +
                        2 * D * static_cast<double>(c.D_inner) + D * classes + classes;
  // Weights, gradients and the two AdamW moments in float32.
  const double state = 16 * params;
  // The memory buffer of M patches per image and its transformer activations.
  const double B = static_cast<double>(c.B), M = static_cast<double>(c.M);
  const double patches = B * (M + static_cast<double>(c.I)) * static_cast<double>(c.n_chan_in) *
                         static_cast<double>(c.patch_size) * static_cast<double>(c.patch_size) * 4;
  const double acts = 4 * B * M * (3 * D + static_cast<double>(c.D_inner) + H * (c.D_k + c.D_v) +
                                   H * static_cast<double>(c.n_token));
  return state + patches + acts;
}

void validate(const Config& c) {
  auto positive = [](int64_t v, const char* k) {
    IPSNET_CHECK(v >= 1, "config key '", k, "': expected >= 1, got ", v);
  };
  positive(c.B, "B");
  positive(c.B_seq, "B_seq");
  positive(c.n_epoch, "n_epoch");
  positive(c.M, "M");
  positive(c.I, "I");
  positive(c.D, "D");
  positive(c.H, "H");
  positive(c.D_k, "D_k");
  positive(c.D_v, "D_v");
  positive(c.D_inner, "D_inner");
  positive(c.n_token, "n_token");
  positive(c.patch_size, "patch_size");
  positive(c.patch_stride, "patch_stride");
  positive(c.n_chan_in, "n_chan_in");
  IPSNET_CHECK(c.normalize == "none" || c.normalize == "imagenet", "config key 'normalize': expected none or imagenet, got '",
               c.normalize, "'");
  IPSNET_CHECK(c.augment_jitter >= 0 && c.augment_jitter <= 0.5, "config key 'augment_jitter': expected 0..0.5, got ",
               c.augment_jitter);
  IPSNET_CHECK(c.augment_translate >= 0, "config key 'augment_translate': expected >= 0, got ", c.augment_translate);
  IPSNET_CHECK(c.n_epoch_warmup >= 0, "config key 'n_epoch_warmup': expected >= 0, got ", c.n_epoch_warmup);
  IPSNET_CHECK(c.lr > 0, "config key 'lr': expected > 0, got ", c.lr);
  IPSNET_CHECK(c.wd >= 0, "config key 'wd': expected >= 0, got ", c.wd);
  IPSNET_CHECK(c.B % c.B_seq == 0 || !c.eager, "config key 'B_seq': ", c.B_seq, " must divide B = ", c.B);
  IPSNET_CHECK(c.B_seq <= c.B, "config key 'B_seq': ", c.B_seq, " must be <= B = ", c.B);
  IPSNET_CHECK(c.attn_dropout >= 0 && c.attn_dropout < 1, "config key 'attn_dropout': expected in [0, 1), got ",
               c.attn_dropout);
  IPSNET_CHECK(c.dropout >= 0 && c.dropout < 1, "config key 'dropout': expected in [0, 1), got ", c.dropout);
  IPSNET_CHECK(c.mask_p >= 0 && c.mask_p <= 1, "config key 'mask_p': expected in [0, 1], got ", c.mask_p);
  IPSNET_CHECK(c.mask_K >= 0, "config key 'mask_K': expected >= 0, got ", c.mask_K);
  IPSNET_CHECK(c.precision == "fp32" || c.precision == "bf16", "config key 'precision': expected fp32 or bf16, got '",
               c.precision, "'");
  IPSNET_CHECK(c.bf16_margin >= 0 && c.bf16_margin <= 0.5, "config key 'bf16_margin': expected 0..0.5, got ",
               c.bf16_margin);
  IPSNET_CHECK(c.shuffle_style == "batch" || c.shuffle_style == "instance",
               "config key 'shuffle_style': expected batch or instance, got '", c.shuffle_style, "'");
  IPSNET_CHECK(c.enc_type == "resnet18" || c.enc_type == "resnet34" || c.enc_type == "resnet50",
               "config key 'enc_type': expected resnet18, resnet34 or resnet50, got '", c.enc_type, "'");
  IPSNET_CHECK(c.n_res_blocks == 2 || c.n_res_blocks == 4, "config key 'n_res_blocks': expected 2 or 4, got ",
               c.n_res_blocks);
  IPSNET_CHECK(c.freeze == "none" || c.freeze == "all" || c.freeze == "all_but_last",
               "config key 'freeze': expected none, all or all_but_last, got '", c.freeze, "'");
  IPSNET_CHECK(!c.use_pos || c.D % 2 == 0, "config key 'D': the positional encoding needs an even D, got ", c.D);
  IPSNET_CHECK(c.threads >= 0 && c.threads <= 1024, "config key 'threads': expected 0..1024, got ", c.threads);
  // Counts that size loops or files, bounded before anything starts.
  IPSNET_CHECK(c.n_epoch <= 1000000, "config key 'n_epoch': expected <= 1000000, got ", c.n_epoch);
  IPSNET_CHECK(c.n_epoch_warmup <= 1000000, "config key 'n_epoch_warmup': expected <= 1000000, got ",
               c.n_epoch_warmup);
  IPSNET_CHECK(c.patch_size <= 65536 && c.patch_stride <= 65536, "config keys 'patch_size'/'patch_stride': expected ",
               "<= 65536, got ", c.patch_size, " / ", c.patch_stride);
  IPSNET_CHECK(c.n_chan_in <= 64, "config key 'n_chan_in': expected 1..64, got ", c.n_chan_in);
  IPSNET_CHECK(c.augment_translate <= 65536, "config key 'augment_translate': expected <= 65536, got ",
               c.augment_translate);
  IPSNET_CHECK(c.seed >= 0, "config key 'seed': expected >= 0, got ", c.seed);
  IPSNET_CHECK(c.max_train >= 0 && c.max_test >= 0, "config keys 'max_train'/'max_test': expected >= 0, got ",
               c.max_train, " / ", c.max_test);
  IPSNET_CHECK(c.eval_every >= 0 && c.log_every >= 0, "config keys 'eval_every'/'log_every': expected >= 0, got ",
               c.eval_every, " / ", c.log_every);
  for (const auto& [name, v] : {std::make_pair("w_div", c.w_div), std::make_pair("w_sem", c.w_sem),
                                std::make_pair("cnn_scale", c.cnn_scale), std::make_pair("scale", c.scale),
                                std::make_pair("regularizer_strength", c.regularizer_strength)})
    IPSNET_CHECK(std::isfinite(v) && v >= 0, "config key '", name, "': expected a finite number >= 0, got ", v);
  IPSNET_CHECK(std::isfinite(c.lr) && std::isfinite(c.wd) && std::isfinite(c.grad_clip), "config keys 'lr', 'wd', ",
               "'grad_clip' must be finite, got ", c.lr, ", ", c.wd, ", ", c.grad_clip);
  IPSNET_CHECK(c.grad_clip >= 0, "config key 'grad_clip' (alias clipnorm): expected >= 0, got ", c.grad_clip);
  IPSNET_CHECK(c.optimizer == "adamw" || c.optimizer == "adam" || c.optimizer == "sgd",
               "config key 'optimizer': expected adamw, adam or sgd, got '", c.optimizer, "'");
  IPSNET_CHECK(c.momentum >= 0 && c.momentum < 1, "config key 'momentum': expected in [0, 1), got ", c.momentum);
  IPSNET_CHECK(c.lr_schedule == "cosine" || c.lr_schedule == "constant" || c.lr_schedule == "step",
               "config key 'lr_schedule': expected cosine, constant or step, got '", c.lr_schedule, "'");
  IPSNET_CHECK(c.lr_schedule != "step" || !c.decrease_lr_at.empty(),
               "config key 'decrease_lr_at': lr_schedule: step needs the epochs after which to divide lr by 10, "
               "e.g. [250]");
  IPSNET_CHECK(c.lr_schedule == "step" || c.decrease_lr_at.empty(), "config key 'decrease_lr_at': ",
               int_list_text(c.decrease_lr_at), " is used only by lr_schedule: step (lr_schedule is ",
               c.lr_schedule, ")");
  for (size_t i = 0; i < c.decrease_lr_at.size(); ++i) {
    IPSNET_CHECK(c.decrease_lr_at[i] >= 1, "config key 'decrease_lr_at': expected epochs >= 1, got ",
                 int_list_text(c.decrease_lr_at));
    IPSNET_CHECK(i == 0 || c.decrease_lr_at[i] > c.decrease_lr_at[i - 1],
                 "config key 'decrease_lr_at': expected strictly increasing epochs, got ",
                 int_list_text(c.decrease_lr_at));
  }
  IPSNET_CHECK(c.N == 0 || c.M <= c.N, "config key 'M': ", c.M, " is larger than N = ", c.N,
               " (memory buffer bigger than the patches of an image)");
  IPSNET_CHECK(c.eval_split == "test" || c.eval_split == "train",
               "config key 'eval_split': expected test or train, got '", c.eval_split, "'");
  IPSNET_CHECK(!c.tasks.empty(), "config key 'tasks': at least one task is needed");
  IPSNET_CHECK(static_cast<int64_t>(c.tasks.size()) <= c.n_token, "config key 'n_token': ", c.n_token,
               " tokens for ", c.tasks.size(), " tasks (one token per task)");
  for (const TaskConfig& t : c.tasks) {
    IPSNET_CHECK(t.act_fn == "softmax" || t.act_fn == "sigmoid", "config key 'tasks.", t.name,
                 ".act_fn': expected softmax or sigmoid, got '", t.act_fn, "'");
    IPSNET_CHECK(t.metric == "accuracy" || t.metric == "multilabel_accuracy" || t.metric == "auc",
                 "config key 'tasks.", t.name, ".metric': expected accuracy, multilabel_accuracy or auc, got '",
                 t.metric, "'");
    IPSNET_CHECK(t.id >= 0 && t.id < c.n_token, "config key 'tasks.", t.name, ".id': ", t.id,
                 " must be a token index in [0, ", c.n_token, ")");
    IPSNET_CHECK(t.n_class >= 1, "config key 'tasks.", t.name, ".n_class': expected >= 1, got ", t.n_class);
  }
  if (c.proxy.enabled) {
    const ProxyAttentionConfig& p = c.proxy;
    const std::string sched = proxy_schedule_text(p.schedule);
    IPSNET_CHECK(!p.schedule.empty(), "config key 'proxy_attention.schedule': missing; give the epochs and proxy steps, ",
                 "e.g. [20, \"p\", 19]");
    IPSNET_CHECK(!p.step_epochs().empty(), "config key 'proxy_attention.schedule': ", sched,
                 " has zero proxy steps (\"p\"); give at least one, e.g. [20, \"p\", 19], or leave the section out");
    IPSNET_CHECK(p.schedule.front() != ProxyAttentionConfig::kProxyStep, "config key 'proxy_attention.schedule': ",
                 sched, " starts with a proxy step; the model must train at least one epoch before it is explained");
    IPSNET_CHECK(p.schedule.back() != ProxyAttentionConfig::kProxyStep, "config key 'proxy_attention.schedule': ",
                 sched, " ends with a proxy step, whose images would never be trained on; end with epochs");
    IPSNET_CHECK(p.epochs() == c.n_epoch, "config key 'proxy_attention.schedule': ", sched, " trains ", p.epochs(),
                 " epochs but n_epoch is ", c.n_epoch, " (set n_epoch: ", p.epochs(), " or leave it out)");
    IPSNET_CHECK(std::isfinite(p.threshold) && p.threshold >= 0 && p.threshold <= 1,
                 "config key 'proxy_attention.threshold': expected in [0, 1] (the maps are min-max normalised), got ",
                 p.threshold);
    IPSNET_CHECK(std::isfinite(p.weight) && p.weight >= 0 && p.weight <= 1,
                 "config key 'proxy_attention.weight': expected in [0, 1], got ", p.weight);
    IPSNET_CHECK(std::isfinite(p.fraction) && p.fraction > 0 && p.fraction <= 1,
                 "config key 'proxy_attention.fraction': expected in (0, 1], got ", p.fraction);
    IPSNET_CHECK(p.count >= 0, "config key 'proxy_attention.count': expected >= 0 (0: use fraction), got ", p.count);
    IPSNET_CHECK(p.select == "misclassified" || p.select == "highest_loss",
                 "config key 'proxy_attention.select': expected misclassified or highest_loss, got '", p.select, "'");
    IPSNET_CHECK(p.replace == "blended" || p.replace == "zero" || p.replace == "mean" || p.replace == "max" ||
                     p.replace == "min",
                 "config key 'proxy_attention.replace': expected blended, zero, mean, max or min, got '", p.replace,
                 "'");
    IPSNET_CHECK(p.mode == "augment" || p.mode == "replace",
                 "config key 'proxy_attention.mode': expected augment or replace, got '", p.mode, "'");
    IPSNET_CHECK(p.explain == "auto" || p.explain == "gradcam_pp" || p.explain == "gradcam" || p.explain == "cam" ||
                     p.explain == "attention",
                 "config key 'proxy_attention.explain': expected auto, gradcam_pp, gradcam, cam or attention, got '",
                 p.explain, "'");
    bool task_known = p.task.empty();
    for (const TaskConfig& t : c.tasks) task_known = task_known || t.name == p.task;
    IPSNET_CHECK(task_known, "config key 'proxy_attention.task': '", p.task, "' is not one of the config's tasks");
    IPSNET_CHECK(p.sheet_images >= 0 && p.sheet_images <= 64,
                 "config key 'proxy_attention.sheet_images': expected 0..64, got ", p.sheet_images);
  }
  // What the model and a step need, against what this machine has: refused
  // before any allocation, with the estimate.
  const double need = estimate_memory_bytes(c);
  const long long have = physical_memory_bytes();
  IPSNET_CHECK(have <= 0 || need <= static_cast<double>(have), "the configuration needs an estimated ",
               human_bytes(need), " of memory (parameters with AdamW state and a step's activations for D=", c.D,
               ", H=", c.H, ", D_inner=", c.D_inner, ", n_class=", c.n_class, ", B=", c.B, ", M=", c.M, ", I=", c.I,
               ", patch_size=", c.patch_size, ") but this machine has ", human_bytes(static_cast<double>(have)));
}

std::string to_yaml(const Config& c) {
  // yaml-cpp's emitter quotes and escapes every string (a run_name with '"',
  // ':' or a newline reads back as written).
  YAML::Emitter e;
  e << YAML::BeginMap;
  for (const KeySpec& s : specs()) {
    if (s.kind == Kind::Tasks || s.kind == Kind::Section) continue;
    e << YAML::Key << s.name << YAML::Value;
    if (s.kind == Kind::String)
      e << YAML::DoubleQuoted << s.get(c);
    else
      e << YAML::Flow << YAML::Load(s.get(c));  // numbers, booleans, lists: the key's own YAML text
  }
  e << YAML::Key << "tasks" << YAML::Value << YAML::BeginMap;
  for (const TaskConfig& t : c.tasks) {
    e << YAML::Key << ("task" + std::to_string(t.id)) << YAML::Value << YAML::Flow << YAML::BeginMap;
    e << YAML::Key << "name" << YAML::Value << YAML::DoubleQuoted << t.name;
    e << YAML::Key << "id" << YAML::Value << t.id;
    e << YAML::Key << "act_fn" << YAML::Value << YAML::DoubleQuoted << t.act_fn;
    e << YAML::Key << "metric" << YAML::Value << YAML::DoubleQuoted << t.metric;
    e << YAML::Key << "n_class" << YAML::Value << t.n_class;
    e << YAML::EndMap;
  }
  e << YAML::EndMap;
  if (c.proxy.enabled) {
    const ProxyAttentionConfig& p = c.proxy;
    e << YAML::Key << "proxy_attention" << YAML::Value << YAML::BeginMap;
    e << YAML::Key << "schedule" << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (int64_t v : p.schedule) {
      if (v == ProxyAttentionConfig::kProxyStep)
        e << YAML::DoubleQuoted << "p";
      else
        e << v;
    }
    e << YAML::EndSeq;
    e << YAML::Key << "explain" << YAML::Value << YAML::DoubleQuoted << p.explain;
    e << YAML::Key << "task" << YAML::Value << YAML::DoubleQuoted << p.task;
    e << YAML::Key << "select" << YAML::Value << YAML::DoubleQuoted << p.select;
    e << YAML::Key << "count" << YAML::Value << p.count;
    e << YAML::Key << "fraction" << YAML::Value << YAML::Load(fmt_double(p.fraction));
    e << YAML::Key << "threshold" << YAML::Value << YAML::Load(fmt_double(p.threshold));
    e << YAML::Key << "replace" << YAML::Value << YAML::DoubleQuoted << p.replace;
    e << YAML::Key << "weight" << YAML::Value << YAML::Load(fmt_double(p.weight));
    e << YAML::Key << "mode" << YAML::Value << YAML::DoubleQuoted << p.mode;
    e << YAML::Key << "clear_every_step" << YAML::Value << p.clear_every_step;
    e << YAML::Key << "sheet_images" << YAML::Value << p.sheet_images;
    e << YAML::EndMap;
  }
  e << YAML::EndMap;
  IPSNET_CHECK(e.good(), "writing the configuration as YAML failed: ", e.GetLastError());
  return std::string(e.c_str()) + "\n";
}

std::string to_table(const Config& c) {
  std::ostringstream os;
  int col = 0;
  for (const KeySpec& s : specs()) {
    if (s.kind == Kind::Tasks || s.kind == Kind::Section) continue;
    std::string v = s.get(c);
    bool given = c.given.count(s.name) > 0;
    os << (given ? "*" : " ") << std::left << std::setw(22) << s.name << std::setw(16) << v;
    os << ((++col % 3 == 0) ? "\n" : "  ");
  }
  if (col % 3) os << "\n";
  for (const TaskConfig& t : c.tasks)
    os << "  task " << t.id << ": " << t.name << " (" << t.act_fn << ", " << t.metric << ", " << t.n_class
       << " classes)\n";
  if (c.proxy.enabled) {
    const ProxyAttentionConfig& p = c.proxy;
    os << "  proxy_attention: schedule " << proxy_schedule_text(p.schedule) << ", explain " << p.explain << ", "
       << p.select << " " << (p.count > 0 ? std::to_string(p.count) : fmt_double(p.fraction)) << ", threshold "
       << fmt_double(p.threshold) << ", replace " << p.replace
       << (p.replace == "blended" ? " (weight " + fmt_double(p.weight) + ")" : std::string()) << ", mode " << p.mode
       << (p.clear_every_step ? ", cleared every step" : "") << "\n";
  }
  os << "  (* = set by the config file or --set)\n";
  return os.str();
}

}  // namespace train
}  // namespace ipsnet

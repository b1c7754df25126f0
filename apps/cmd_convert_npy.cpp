// `ipsnet export-npy` / `ipsnet import-npy`: interoperability with the
// reference tools' train.npy / test.npy (pickled NumPy object arrays).
//
// The C++ side reads and writes a "flat" directory of plain .npy arrays
// (documented in docs/data.md); scripts/npy_convert.py (python3 + NumPy)
// converts between the flat directory and the pickled reference layout.
#include <sys/wait.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "apps/args.h"
#include "apps/command.h"
#include "data/dataset.h"
#include "data/megapixel_mnist.h"
#include "data/npy.h"
#include "engine/common/error.h"
#include "engine/common/files.h"

namespace ipsnet {
namespace app {
namespace {

namespace fs = std::filesystem;

std::string default_script() {
  const char* env = std::getenv("IPSNET_SCRIPTS_DIR");
  if (env && *env) return std::string(env) + "/npy_convert.py";
  // This file is apps/cmd_convert_npy.cpp in the source tree.
  fs::path here(__FILE__);
  return (here.parent_path().parent_path() / "scripts" / "npy_convert.py").string();
}

std::string default_python() {
  const char* env = std::getenv("IPSNET_PYTHON");
  return env && *env ? env : "/usr/bin/python3";
}

std::string shell_quote(const std::string& s) {
  std::string o = "'";
  for (char c : s) {
    if (c == '\'')
      o += "'\\''";
    else
      o += c;
  }
  return o + "'";
}

void run_script(const std::string& python, const std::string& script, const std::string& verb, const std::string& a,
                const std::string& b) {
  IPSNET_CHECK(fs::exists(python), "Python interpreter '", python, "' not found; pass --python or set $IPSNET_PYTHON");
  IPSNET_CHECK(fs::exists(script), "conversion script '", script, "' not found; pass --script or set $IPSNET_SCRIPTS_DIR");
  std::string cmd = shell_quote(python) + " " + shell_quote(script) + " " + verb + " " + shell_quote(a) + " " +
                    shell_quote(b);
  int rc = std::system(cmd.c_str());
  IPSNET_CHECK(rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "'", script, " ", verb,
               "' failed (exit status ", WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, "); see its message above");
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  IPSNET_CHECK(in.good(), "cannot read '", path, "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_text(const std::string& path, const std::string& text) {
  FILE* f = std::fopen(path.c_str(), "wb");
  IPSNET_CHECK(f, "cannot create '", path, "'");
  bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  IPSNET_CHECK(std::fclose(f) == 0 && ok, "writing '", path, "' failed (disk full?)");
}

// Minimal lookup of a top-level scalar in our own flat.json / parameters.json.
std::string json_value(const std::string& text, const std::string& key) {
  size_t p = text.find("\"" + key + "\"");
  if (p == std::string::npos) return "";
  p = text.find(':', p);
  size_t e = text.find_first_of(",}\n", p + 1);
  std::string v = text.substr(p + 1, e - p - 1);
  v.erase(0, v.find_first_not_of(" \t\""));
  v.erase(v.find_last_not_of(" \t\"\r") + 1);
  return v;
}

int64_t json_int(const std::string& text, const std::string& key, const std::string& file) {
  std::string v = json_value(text, key);
  IPSNET_CHECK(!v.empty(), "'", file, "' lacks the integer \"", key, "\"");
  errno = 0;
  char* end = nullptr;
  long long x = std::strtoll(v.c_str(), &end, 10);
  IPSNET_CHECK(end && *end == '\0' && errno == 0, "'", file, "': \"", key, "\" is '", v, "', expected an integer");
  return x;
}

// ---- export -------------------------------------------------------------------

void export_split(const data::DatasetReader& r, const std::string& flat, const std::string& split) {
  const int64_t n = r.size();
  for (bool low : {false, true}) {
    if (low && !r.has_lowres()) continue;
    std::vector<int64_t> offsets{0}, idx;
    std::vector<float> val;
    for (int64_t i = 0; i < n; ++i) {
      data::SparseImage s = r.read_sparse(i, low);
      int64_t k = 0;
      for (int64_t row = 0; row < s.height; ++row)
        for (int64_t j = 0; j < s.row_counts[row]; ++j, ++k) {
          idx.push_back(row * s.width + s.cols[k]);
          val.push_back(s.vals[k]);
        }
      offsets.push_back(static_cast<int64_t>(idx.size()));
    }
    std::string pre = flat + "/" + split + (low ? "_low" : "_high");
    data::write_npy(pre + "_offsets.npy", "<i8", {n + 1}, offsets.data(), offsets.size() * 8);
    data::write_npy(pre + "_idx.npy", "<i8", {static_cast<int64_t>(idx.size())}, idx.data(), idx.size() * 8);
    data::write_npy(pre + "_val.npy", "<f4", {static_cast<int64_t>(val.size())}, val.data(), val.size() * 4);
  }
  std::vector<int64_t> labels, digits;
  std::vector<uint8_t> multi;
  for (int64_t i = 0; i < n; ++i) {
    const data::ImageMeta& m = r.meta(i);
    labels.insert(labels.end(), {m.majority, m.max, m.top, m.n_noise});
    multi.insert(multi.end(), m.multi.begin(), m.multi.end());
    for (int d = 0; d < data::kMaxDigitsPerImage; ++d) {
      if (d < static_cast<int>(m.digits.size())) {
        const auto& g = m.digits[d];
        digits.insert(digits.end(), {g.row, g.col, g.size, g.label});
      } else {
        digits.insert(digits.end(), {-1, -1, -1, -1});
      }
    }
  }
  data::write_npy(flat + "/" + split + "_labels.npy", "<i8", {n, 4}, labels.data(), labels.size() * 8);
  data::write_npy(flat + "/" + split + "_multi.npy", "|u1", {n, 10}, multi.data(), multi.size());
  data::write_npy(flat + "/" + split + "_digits.npy", "<i8", {n, data::kMaxDigitsPerImage, 4}, digits.data(),
                  digits.size() * 8);
}

void export_flat(const std::string& dir, const std::string& flat) {
  data::DatasetReader tr = data::DatasetReader::open(dir, "train");
  data::DatasetReader te = data::DatasetReader::open(dir, "test");
  std::ostringstream js;
  js << "{\"style\": \"" << tr.style() << "\", \"height\": " << tr.height() << ", \"width\": " << tr.width()
     << ", \"lowres_height\": " << tr.lowres_height() << ", \"lowres_width\": " << tr.lowres_width()
     << ", \"n_train\": " << tr.size() << ", \"n_test\": " << te.size() << "}\n";
  write_text(flat + "/flat.json", js.str());
  if (fs::exists(dir + "/parameters.json")) fs::copy_file(dir + "/parameters.json", flat + "/parameters.json");
  export_split(tr, flat, "train");
  export_split(te, flat, "test");
}

int run_export(const std::vector<std::string>& args) {
  ArgParser p("export-npy",
              "Export an ipsnet dataset to the reference tools' layout: OUT_DIR/train.npy, test.npy\n"
              "(pickled object arrays; read with np.load(..., allow_pickle=True)) and parameters.json.");
  p.add_positional("DIR", "ipsnet dataset directory");
  p.add_positional("OUT_DIR", "output directory (must not exist unless --force)");
  p.add_flag("flat", "write only the plain-array flat directory (no Python needed)");
  p.add_option("python", default_python(), "Python 3 interpreter with NumPy");
  p.add_option("script", default_script(), "path of scripts/npy_convert.py");
  p.add_flag("force", "replace an existing OUT_DIR");
  if (!p.parse(args)) return 0;
  const std::string dir = p.positional(0), out = p.positional(1);
  bool force = p.get_flag("force");
  IPSNET_CHECK(fs::is_directory(dir), "dataset directory '", dir, "' does not exist");
  TempDirectory tmp_dir(out, force);  // removes itself unless committed
  const std::string& tmp = tmp_dir.path();
  if (p.get_flag("flat")) {
    export_flat(dir, tmp);
  } else {
    std::string flat = tmp + "/.flat";
    fs::create_directory(flat);
    export_flat(dir, flat);
    run_script(p.get_string("python"), p.get_string("script"), "pack", flat, tmp);
    fs::remove_all(flat);
  }
  tmp_dir.commit();
  std::fprintf(stderr, "export-npy: wrote %s\n", out.c_str());
  return 0;
}

// ---- import -------------------------------------------------------------------

void import_split(const std::string& flat, const std::string& split, const std::string& out,
                  const data::SplitHeader& header) {
  auto load = [&](const std::string& name) { return data::read_npy(flat + "/" + split + name); };
  auto view = [&](const std::string& pre, int64_t h, int64_t w) {
    struct V {
      std::vector<int64_t> off, idx;
      std::vector<double> val;
    } v;
    v.off = load(pre + "_offsets.npy").as_int64();
    v.idx = load(pre + "_idx.npy").as_int64();
    v.val = load(pre + "_val.npy").as_double();
    IPSNET_CHECK(v.idx.size() == v.val.size(), split, pre, ": ", v.idx.size(), " indices but ", v.val.size(), " values");
    IPSNET_CHECK(!v.off.empty() && v.off.front() == 0 && v.off.back() == static_cast<int64_t>(v.idx.size()), split,
                 pre, "_offsets.npy does not cover the ", v.idx.size(), " nonzeros");
    for (size_t i = 0; i + 1 < v.off.size(); ++i)
      IPSNET_CHECK(v.off[i] <= v.off[i + 1], split, pre, "_offsets.npy: offset ", i + 1, " (", v.off[i + 1],
                   ") is smaller than offset ", i, " (", v.off[i], "); offsets must not decrease");
    (void)h, (void)w;
    return v;
  };
  auto hi = view("_high", header.height, header.width);
  decltype(hi) lo;
  bool has_low = header.lowres_height > 0;
  if (has_low) lo = view("_low", header.lowres_height, header.lowres_width);
  const int64_t n = static_cast<int64_t>(hi.off.size()) - 1;
  IPSNET_CHECK(!has_low || static_cast<int64_t>(lo.off.size()) == n + 1, split, ": ", n,
               " full-resolution images but ", lo.off.size() - 1, " low-resolution ones");
  std::vector<int64_t> labels = load("_labels.npy").as_int64();
  std::vector<int64_t> multi = load("_multi.npy").as_int64();
  IPSNET_CHECK(static_cast<int64_t>(labels.size()) == 4 * n && static_cast<int64_t>(multi.size()) == 10 * n, split,
               ": labels/multi arrays do not match ", n, " images");
  for (int64_t i = 0; i < n; ++i) {
    static const char* names[4] = {"majority", "max", "top", "n_noise"};
    for (int k = 0; k < 3; ++k)
      IPSNET_CHECK(labels[4 * i + k] >= -1 && labels[4 * i + k] <= 9, split, "_labels.npy: image ", i, " has ",
                   names[k], " label ", labels[4 * i + k], ", expected a digit 0..9 (or -1: unknown)");
    IPSNET_CHECK(labels[4 * i + 3] >= -1, split, "_labels.npy: image ", i, " has n_noise ", labels[4 * i + 3],
                 ", expected >= 0 (or -1: unknown)");
    for (int c = 0; c < 10; ++c)
      IPSNET_CHECK(multi[10 * i + c] == 0 || multi[10 * i + c] == 1, split, "_multi.npy: image ", i, " class ", c,
                   " is ", multi[10 * i + c], ", expected 0 or 1");
  }
  std::vector<int64_t> digits;
  if (fs::exists(flat + "/" + split + "_digits.npy")) {
    digits = load("_digits.npy").as_int64();
    IPSNET_CHECK(static_cast<int64_t>(digits.size()) == n * data::kMaxDigitsPerImage * 4, split,
                 "_digits.npy does not match ", n, " images");
  }
  auto sparse = [&](const auto& v, int64_t i, int64_t h, int64_t w) {
    std::vector<std::pair<int64_t, float>> px;
    for (int64_t k = v.off[i]; k < v.off[i + 1]; ++k) {
      IPSNET_CHECK(v.idx[k] >= 0 && v.idx[k] < h * w, split, " image ", i, ": pixel index ", v.idx[k],
                   " outside the ", h, "x", w, " canvas");
      if (v.val[k] != 0.0) px.emplace_back(v.idx[k], static_cast<float>(v.val[k]));
    }
    std::sort(px.begin(), px.end());
    data::SparseImage s;
    s.height = h;
    s.width = w;
    s.row_counts.assign(h, 0);
    for (size_t k = 0; k < px.size(); ++k) {
      IPSNET_CHECK(k == 0 || px[k].first != px[k - 1].first, split, " image ", i, ": pixel ", px[k].first,
                   " appears twice");
      ++s.row_counts[px[k].first / w];
      s.cols.push_back(static_cast<uint16_t>(px[k].first % w));
      s.vals.push_back(px[k].second);
    }
    return s;
  };
  data::DatasetWriter writer(out, split, header);
  for (int64_t i = 0; i < n; ++i) {
    data::SparseImage high = sparse(hi, i, header.height, header.width);
    data::SparseImage low;
    if (has_low) low = sparse(lo, i, header.lowres_height, header.lowres_width);
    data::ImageMeta m;
    m.majority = static_cast<int>(labels[4 * i]);
    m.max = static_cast<int>(labels[4 * i + 1]);
    m.top = static_cast<int>(labels[4 * i + 2]);
    m.n_noise = labels[4 * i + 3];
    for (int c = 0; c < 10; ++c) m.multi[c] = multi[10 * i + c] != 0;
    if (!digits.empty())
      for (int d = 0; d < data::kMaxDigitsPerImage; ++d) {
        const int64_t* g = &digits[(i * data::kMaxDigitsPerImage + d) * 4];
        if (g[2] > 0) {
          IPSNET_CHECK(g[0] >= 0 && g[1] >= 0 && g[0] <= header.height - g[2] && g[1] <= header.width - g[2] &&
                           g[3] >= 0 && g[3] <= 9,
                       split, "_digits.npy: image ", i, " digit ", d, " (row ", g[0], ", col ", g[1], ", size ", g[2],
                       ", label ", g[3], ") is not a digit 0..9 inside the ", header.height, "x", header.width,
                       " canvas");
          m.digits.push_back({g[0], g[1], g[2], static_cast<int>(g[3])});
        }
      }
    writer.append(data::encode_record(high, has_low ? &low : nullptr), high.nnz(), low.nnz(), m);
  }
  writer.finish();
}

void import_flat(const std::string& flat, const std::string& out) {
  std::string js = read_text(flat + "/flat.json");
  data::SplitHeader h;
  h.style = json_value(js, "style");
  h.height = json_int(js, "height", flat + "/flat.json");
  h.width = json_int(js, "width", flat + "/flat.json");
  h.lowres_height = json_int(js, "lowres_height", flat + "/flat.json");
  h.lowres_width = json_int(js, "lowres_width", flat + "/flat.json");
  IPSNET_CHECK(h.height >= 1 && h.width >= 1 && h.height <= 65535 && h.width <= 65535, "'", flat,
               "/flat.json': canvas ", h.height, "x", h.width, " is not in 1..65535 per side");
  IPSNET_CHECK(h.lowres_height >= 0 && h.lowres_width >= 0 && h.lowres_height <= h.height &&
                   h.lowres_width <= h.width && (h.lowres_height == 0) == (h.lowres_width == 0),
               "'", flat, "/flat.json': low-resolution view ", h.lowres_height, "x", h.lowres_width,
               " does not fit the ", h.height, "x", h.width, " canvas");
  // A directory may hold one split only (e.g. just test.npy, for `ipsnet eval`).
  int n_splits = 0;
  for (const char* split : {"train", "test"}) {
    if (!fs::exists(flat + "/" + split + "_high_offsets.npy")) {
      std::fprintf(stderr, "import-npy: no %s split in '%s' (skipped)\n", split, flat.c_str());
      continue;
    }
    import_split(flat, split, out, h);
    ++n_splits;
  }
  IPSNET_CHECK(n_splits > 0, "import-npy: '", flat, "' holds neither a train nor a test split");
  if (fs::exists(flat + "/parameters.json")) fs::copy_file(flat + "/parameters.json", out + "/parameters.json");
}

int run_import(const std::vector<std::string>& args) {
  ArgParser p("import-npy",
              "Import the reference tools' train.npy / test.npy (+ parameters.json) into an ipsnet dataset.\n"
              "Digit boxes are not part of the reference layout; imported images keep the labels only.");
  p.add_positional("REF_DIR", "directory with train.npy and/or test.npy and parameters.json (or a flat directory "
                             "with --flat)");
  p.add_positional("OUT_DIR", "output directory (must not exist unless --force)");
  p.add_flag("flat", "REF_DIR is a flat directory written by `export-npy --flat` (no Python needed)");
  p.add_option("python", default_python(), "Python 3 interpreter with NumPy");
  p.add_option("script", default_script(), "path of scripts/npy_convert.py");
  p.add_flag("force", "replace an existing OUT_DIR");
  if (!p.parse(args)) return 0;
  const std::string ref = p.positional(0), out = p.positional(1);
  bool force = p.get_flag("force");
  IPSNET_CHECK(fs::is_directory(ref), "directory '", ref, "' does not exist");
  TempDirectory tmp_dir(out, force);  // removes itself unless committed
  const std::string& tmp = tmp_dir.path();
  if (p.get_flag("flat")) {
    import_flat(ref, tmp);
  } else {
    std::string flat = tmp + "/.flat";
    fs::create_directory(flat);
    run_script(p.get_string("python"), p.get_string("script"), "unpack", ref, flat);
    import_flat(flat, tmp);
    fs::remove_all(flat);
  }
  tmp_dir.commit();
  std::fprintf(stderr, "import-npy: wrote %s\n", out.c_str());
  return 0;
}

CommandRegistrar reg_export("export-npy", "export a dataset to the reference train.npy/test.npy layout", run_export);
CommandRegistrar reg_import("import-npy", "import the reference train.npy/test.npy layout", run_import);

}  // namespace
}  // namespace app
}  // namespace ipsnet

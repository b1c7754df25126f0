#include "data/photo_import.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "data/photo_codec.h"
#include "data/photo_dataset.h"
#include "engine/common/error.h"
#include "engine/common/files.h"
#include "engine/common/json_writer.h"
#include "engine/common/ordered_parallel.h"

namespace ipsnet {
namespace data {

namespace fs = std::filesystem;

std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false, was_quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char ch = line[i];
    if (quoted) {
      if (ch == '"') {
        if (i + 1 < line.size() && line[i + 1] == '"') {
          cur += '"';
          ++i;
        } else {
          quoted = false;
        }
      } else {
        cur += ch;
      }
    } else if (ch == '"' && cur.empty() && !was_quoted) {
      quoted = was_quoted = true;
    } else if (ch == ',') {
      out.push_back(was_quoted ? cur : std::string(cur));
      cur.clear();
      was_quoted = false;
    } else {
      cur += ch;
    }
  }
  IPSNET_CHECK(!quoted, "unterminated quoted field");
  out.push_back(cur);
  // Unquoted fields lose surrounding blanks (a common hand-written CSV habit).
  for (std::string& f : out) {
    const size_t a = f.find_first_not_of(" \t"), b = f.find_last_not_of(" \t");
    f = a == std::string::npos ? std::string() : f.substr(a, b - a + 1);
  }
  return out;
}

namespace {

struct Item {
  fs::path file;                    // where to read it
  std::string display;              // as named in the dataset and errors
  std::string where;                // " (CSV row 7)" or ""
  std::vector<std::string> values;  // one per task
  std::string split;
  std::string name() const { return "'" + display + "'" + where; }
};

bool image_extension(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return e == ".png" || e == ".jpg" || e == ".jpeg";
}

bool hidden(const fs::path& p) {
  const std::string n = p.filename().string();
  return !n.empty() && n[0] == '.';
}

void check_text(const std::string& s, const std::string& what) {
  IPSNET_CHECK(s.find_first_of("\t\n\r") == std::string::npos, what, " '", s,
               "' contains a tab or a line break (not storable)");
}

// Image files under `dir` (recursively), sorted; counts others in `skipped`.
std::vector<fs::path> image_files(const fs::path& dir, int64_t& skipped) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, fs::directory_options::follow_directory_symlink, ec), end;
       it != end; it.increment(ec)) {
    IPSNET_CHECK(!ec, "cannot list '", dir.string(), "': ", ec.message());
    if (hidden(it->path())) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file()) continue;
    if (image_extension(it->path()))
      out.push_back(it->path());
    else
      ++skipped;
  }
  IPSNET_CHECK(!ec, "cannot list '", dir.string(), "': ", ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<fs::path> subdirs(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && !hidden(e.path())) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

// One class per subfolder of `dir`, into `split`.
void scan_classes(const fs::path& root, const fs::path& dir, const std::string& split, std::vector<Item>& items,
                  int64_t& skipped) {
  const std::vector<fs::path> classes = subdirs(dir);
  IPSNET_CHECK(!classes.empty(), "'", dir.string(), "' has no class folders (one subfolder per class, or a CSV)");
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && !hidden(e.path())) ++skipped;  // files beside the class folders
  for (const fs::path& c : classes) {
    const std::vector<fs::path> files = image_files(c, skipped);
    IPSNET_CHECK(!files.empty(), "class folder '", c.string(), "' holds no .png/.jpg/.jpeg file");
    const std::string label = c.filename().string();
    check_text(label, "class name");
    for (const fs::path& f : files) {
      Item it;
      it.file = f;
      it.display = fs::relative(f, root).string();
      check_text(it.display, "file name");
      it.values = {label};
      it.split = split;
      items.push_back(std::move(it));
    }
  }
}

// The CSV: header row (path column, task columns, optional `split`).
void scan_csv(const fs::path& csv, const std::string& default_split, std::vector<Item>& items,
              std::vector<std::string>& tasks) {
  std::ifstream in(csv);
  IPSNET_CHECK(in.good(), "cannot open the CSV '", csv.string(), "'");
  std::string line;
  int64_t row = 0;
  std::vector<std::string> header;
  int split_col = -1;
  const fs::path base = csv.parent_path();
  while (std::getline(in, line)) {
    ++row;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (row == 1 && line.size() >= 3 && static_cast<unsigned char>(line[0]) == 0xEF) line = line.substr(3);  // BOM
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    std::vector<std::string> f;
    try {
      f = split_csv_line(line);
    } catch (const Error& e) {
      IPSNET_FAIL("'", csv.string(), "' row ", row, ": unreadable (unterminated quoted field)");
    }
    if (header.empty()) {
      header = f;
      IPSNET_CHECK(header.size() >= 2, "'", csv.string(), "' row ", row,
                   ": the header needs a path column and at least one label column, got '", line, "'");
      for (size_t k = 1; k < header.size(); ++k) {
        IPSNET_CHECK(!header[k].empty(), "'", csv.string(), "': header column ", k + 1, " has no name");
        check_text(header[k], "task name");
        if (header[k] == "split")
          split_col = static_cast<int>(k);
        else
          tasks.push_back(header[k]);
      }
      IPSNET_CHECK(!tasks.empty(), "'", csv.string(), "': no label column besides 'split'");
      IPSNET_CHECK(tasks.size() <= static_cast<size_t>(kMaxPhotoTasks), "'", csv.string(), "': ", tasks.size(),
                   " label columns, at most ", kMaxPhotoTasks);
      std::set<std::string> seen(tasks.begin(), tasks.end());
      IPSNET_CHECK(seen.size() == tasks.size(), "'", csv.string(), "': a label column name appears twice");
      continue;
    }
    IPSNET_CHECK(f.size() == header.size(), "'", csv.string(), "' row ", row, ": ", f.size(),
                 " fields, the header has ", header.size(), " ('", line, "')");
    Item it;
    it.where = str_cat(" (", csv.filename().string(), " row ", row, ")");
    IPSNET_CHECK(!f[0].empty(), "'", csv.string(), "' row ", row, ": empty path");
    fs::path p(f[0]);
    it.file = p.is_absolute() ? p : base / p;
    it.display = f[0];
    check_text(it.display, "file name");
    it.split = default_split;
    for (size_t k = 1; k < f.size(); ++k) {
      if (static_cast<int>(k) == split_col) {
        IPSNET_CHECK(f[k] == "train" || f[k] == "test", "'", csv.string(), "' row ", row,
                     ": split must be train or test, got '", f[k], "'");
        it.split = f[k];
        continue;
      }
      IPSNET_CHECK(!f[k].empty(), "'", csv.string(), "' row ", row, ": empty label in column '", header[k], "'");
      it.values.push_back(f[k]);
    }
    items.push_back(std::move(it));
  }
  IPSNET_CHECK(!header.empty(), "'", csv.string(), "' is empty (it needs a header row: path,label)");
}

bool all_integers(const std::set<std::string>& v) {
  for (const std::string& s : v) {
    if (s.empty() || s.size() > 18) return false;
    size_t k = s[0] == '-' ? 1 : 0;
    if (k == s.size()) return false;
    for (; k < s.size(); ++k)
      if (s[k] < '0' || s[k] > '9') return false;
  }
  return true;
}

std::vector<uint8_t> read_file(const fs::path& p, const std::string& name) {
  std::error_code ec;
  IPSNET_CHECK(fs::is_regular_file(p, ec), name, ": no such file ('", p.string(), "')");
  std::ifstream in(p, std::ios::binary);
  IPSNET_CHECK(in.good(), name, ": cannot open '", p.string(), "'");
  std::vector<uint8_t> b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  IPSNET_CHECK(!in.bad(), name, ": read error");
  return b;
}

struct Processed {
  std::vector<uint8_t> bytes;
  PhotoEntry entry;
  PhotoInfo info;
  int64_t bytes_in = 0;
  bool reencoded = false;
};

}  // namespace

ImportImagesSummary import_images(const std::string& src, const std::string& out, const ImportImagesOptions& o) {
  IPSNET_CHECK(o.split == "train" || o.split == "test", "--split must be train or test, got '", o.split, "'");
  IPSNET_CHECK(o.test_fraction >= 0 && o.test_fraction < 1, "--test-fraction must be in [0, 1), got ",
               o.test_fraction);
  IPSNET_CHECK((o.resize_h == 0) == (o.resize_w == 0) && o.resize_h >= 0 && o.resize_w >= 0,
               "--resize needs two positive sizes H W, got ", o.resize_h, " ", o.resize_w);
  ImportImagesSummary sum;
  std::vector<Item> items;
  std::vector<std::string> tasks;
  const fs::path root(src);
  if (fs::is_regular_file(root)) {
    sum.layout = "csv";
    scan_csv(root, o.split, items, tasks);
  } else {
    IPSNET_CHECK(fs::is_directory(root), "'", src, "' is neither a folder nor a CSV file");
    tasks = {"label"};
    const std::vector<fs::path> top = subdirs(root);
    const bool split_layout =
        !top.empty() && std::all_of(top.begin(), top.end(), [](const fs::path& p) {
          return p.filename() == "train" || p.filename() == "test";
        });
    if (split_layout) {
      sum.layout = "folders with train/ and test/";
      for (const fs::path& s : top) scan_classes(root, s, s.filename().string(), items, sum.skipped_files);
    } else {
      sum.layout = "folders";
      scan_classes(root, root, o.split, items, sum.skipped_files);
    }
  }
  IPSNET_CHECK(!items.empty(), "'", src, "' names no image");
  sum.tasks = tasks;

  // Classes per task: the distinct values, numerically when all are integers.
  std::vector<PhotoTask> ptasks;
  std::vector<std::map<std::string, int32_t>> index(tasks.size());
  for (size_t t = 0; t < tasks.size(); ++t) {
    std::set<std::string> values;
    for (const Item& it : items) values.insert(it.values[t]);
    std::vector<std::string> sorted(values.begin(), values.end());
    if (all_integers(values))
      std::sort(sorted.begin(), sorted.end(),
                [](const std::string& a, const std::string& b) { return std::stoll(a) < std::stoll(b); });
    for (const std::string& v : sorted) check_text(v, "class name");
    for (size_t k = 0; k < sorted.size(); ++k) index[t][sorted[k]] = static_cast<int32_t>(k);
    ptasks.push_back({tasks[t], sorted});
  }

  // --test-fraction: per class of the first task, a seeded draw.
  if (o.test_fraction > 0) {
    std::map<std::string, std::vector<size_t>> by_class;
    for (size_t k = 0; k < items.size(); ++k)
      if (items[k].split == o.split) by_class[items[k].values[0]].push_back(k);
    std::mt19937_64 gen(static_cast<uint64_t>(o.seed));
    for (auto& c : by_class) {
      std::vector<size_t>& v = c.second;
      std::shuffle(v.begin(), v.end(), gen);
      const size_t n_test = static_cast<size_t>(std::llround(o.test_fraction * static_cast<double>(v.size())));
      for (size_t k = 0; k < n_test; ++k) items[v[k]].split = "test";
    }
  }
  std::vector<ImportItem> out_items;
  for (const Item& it : items) {
    ImportItem x;
    x.file = it.file.string();
    x.display = it.display;
    x.where = it.where;
    x.split = it.split;
    for (size_t t = 0; t < tasks.size(); ++t) x.labels.push_back(index[t].at(it.values[t]));
    out_items.push_back(std::move(x));
  }
  ImportImagesSummary w = write_photo_dataset(out_items, ptasks, out, o, sum.layout, src);
  w.skipped_files = sum.skipped_files;
  return w;
}

ImportImagesSummary write_photo_dataset(const std::vector<ImportItem>& in_items, const std::vector<PhotoTask>& ptasks,
                                        const std::string& out, const ImportImagesOptions& o,
                                        const std::string& layout, const std::string& src) {
  ImportImagesSummary sum;
  sum.layout = layout;
  for (const PhotoTask& t : ptasks) sum.tasks.push_back(t.name);
  // Train first, the given order kept within a split.
  std::vector<ImportItem> items = in_items;
  std::stable_sort(items.begin(), items.end(), [](const ImportItem& a, const ImportItem& b) {
    return a.split != b.split && a.split == "train";
  });
  IPSNET_CHECK(!items.empty(), "no image to import");
  TempDirectory tmp(out, o.force);
  std::map<std::string, std::unique_ptr<PhotoWriter>> writers;
  for (const ImportItem& it : items)
    if (!writers.count(it.split)) writers[it.split] = std::make_unique<PhotoWriter>(tmp.path(), it.split, ptasks);
  const int64_t n = static_cast<int64_t>(items.size());
  bool any_colour = false;
  auto t0 = std::chrono::steady_clock::now(), last = t0;
  ordered_parallel_map(
      n, std::max(1, o.threads), 4 * std::max(1, o.threads),
      [&]() {
        return [&](int64_t i) {
          const ImportItem& it = items[static_cast<size_t>(i)];
          Processed p;
          p.bytes = read_file(it.file, it.name());
          p.bytes_in = static_cast<int64_t>(p.bytes.size());
          p.info = check_photo(p.bytes.data(), p.bytes.size(), it.name());
          p.entry.format = p.info.format;
          p.entry.channels = p.info.channels;
          p.entry.height = p.info.height;
          p.entry.width = p.info.width;
          const bool resize = o.resize_h > 0 && (o.resize_h != p.info.height || o.resize_w != p.info.width);
          if (resize || (p.info.format == PhotoFormat::kPng && p.info.interlaced)) {
            int64_t h = 0, w = 0;
            std::vector<uint8_t> px =
                decode_photo(p.bytes.data(), p.bytes.size(), p.info.channels, it.name(), &h, &w);
            if (resize) {
              px = resize_bilinear_pil(px.data(), h, w, p.info.channels, o.resize_h, o.resize_w);
              h = o.resize_h;
              w = o.resize_w;
            }
            p.bytes = p.info.format == PhotoFormat::kJpeg
                          ? encode_jpeg(px.data(), h, w, p.info.channels, o.jpeg_quality)
                          : encode_png(px.data(), h, w, p.info.channels);
            p.entry.height = h;
            p.entry.width = w;
            p.reencoded = true;
          }
          return p;
        };
      },
      [&](int64_t i, Processed p) {
        const ImportItem& it = items[static_cast<size_t>(i)];
        p.entry.path = it.display;
        p.entry.labels = it.labels;
        writers.at(it.split)->append(p.bytes, p.entry);
        (it.split == "train" ? sum.n_train : sum.n_test) += 1;
        (p.info.format == PhotoFormat::kJpeg ? sum.jpeg : sum.png) += 1;
        any_colour = any_colour || p.info.channels == 3;
        sum.gray_as_rgb += p.info.channels == 1;
        sum.palette += p.info.palette;
        sum.alpha_dropped += p.info.alpha;
        sum.reencoded += p.reencoded;
        sum.progressive += p.info.format == PhotoFormat::kJpeg && p.info.interlaced;
        sum.bytes_in += p.bytes_in;
        sum.bytes_out += static_cast<int64_t>(p.bytes.size());
        const auto now = std::chrono::steady_clock::now();
        if (!o.quiet && (std::chrono::duration<double>(now - last).count() >= 5.0 || i + 1 == n)) {
          last = now;
          const double s = std::chrono::duration<double>(now - t0).count();
          std::fprintf(stderr, "import-images: %lld / %lld images (%.1f images/s)\n", static_cast<long long>(i + 1),
                       static_cast<long long>(n), s > 0 ? (i + 1) / s : 0.0);
        }
      });
  sum.channels = any_colour ? 3 : 1;
  if (!any_colour) sum.gray_as_rgb = 0;
  for (auto& w : writers) w.second->finish(sum.channels);

  JsonWriter j(2);
  j.begin_object();
  j.member("kind", "photos").member("source", src).member("layout", layout);
  j.member("n_train", sum.n_train).member("n_test", sum.n_test).member("channels", sum.channels);
  j.key("resize").begin_array();
  if (o.resize_h > 0) j.value(o.resize_h).value(o.resize_w);
  j.end_array();
  if (o.resize_h > 0) j.member("jpeg_quality", static_cast<int64_t>(o.jpeg_quality));
  if (o.test_fraction > 0) j.member("test_fraction", o.test_fraction).member("seed", o.seed);
  for (const auto& kv : o.extra_json) j.member(kv.first, kv.second);
  j.key("tasks").begin_object();
  for (const PhotoTask& t : ptasks) {
    j.key(t.name).begin_array();
    for (const std::string& c : t.classes) j.value(c);
    j.end_array();
  }
  j.end_object();
  j.end_object();
  write_file_atomic((fs::path(tmp.path()) / "parameters.json").string(), j.str() + "\n");
  tmp.commit();
  return sum;
}

}  // namespace data
}  // namespace ipsnet

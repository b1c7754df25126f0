#include "train/proxy_attention.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <numeric>
#include <sstream>

#include "data/npy.h"
#include "data/png_writer.h"
#include "data/resize.h"
#include "engine/common/files.h"
#include "layers/mode_guard.h"
#include "train/attention_map.h"
#include "train/batch.h"
#include "train/progress.h"

namespace ipsnet {
namespace train {

namespace fs = std::filesystem;

std::string proxy_cycle_dir(const std::string& run_dir, int64_t step) {
  return (fs::path(run_dir) / "proxy" / ("cycle_" + std::to_string(step))).string();
}

// ---- the store ---------------------------------------------------------------

namespace {

bool pread_all(int fd, void* dst, size_t n, int64_t off) {
  char* p = static_cast<char*>(dst);
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, n, off);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
    off += r;
  }
  return true;
}

}  // namespace

ProxyStore::ProxyStore(const std::string& dir) : dir_(dir), path_((fs::path(dir) / "images.npy").string()) {
  fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  IPSNET_CHECK(fd_ >= 0, "proxy images '", path_, "' cannot be opened: ", std::strerror(errno),
               " (the run directory's proxy split is incomplete)");
  try {
    // The header (ours is 128 bytes; a version-1.0 header is at most 64 KiB).
    const int64_t have = static_cast<int64_t>(fs::file_size(path_));
    std::vector<uint8_t> head(static_cast<size_t>(std::min<int64_t>(have, 65536 + 12)));
    IPSNET_CHECK(pread_all(fd_, head.data(), head.size(), 0), "proxy images '", path_, "': cannot read its header");
    const data::NpyHeader h = data::parse_npy_header(head, path_);
    IPSNET_CHECK(h.descr == "<f4" && h.shape.size() == 4 && h.shape[1] >= 1 && h.shape[2] >= 1 && h.shape[3] >= 1,
                 "proxy images '", path_, "': expected float32 (<f4) of shape (n, C, H, W)");
    C_ = h.shape[1];
    H_ = h.shape[2];
    W_ = h.shape[3];
    data_offset_ = static_cast<int64_t>(h.data_offset);
    const uint64_t data_bytes = static_cast<uint64_t>(have) - h.data_offset;
    IPSNET_CHECK(!h.overflow && h.numel <= data_bytes / 4 && h.numel * 4 == data_bytes, "proxy images '", path_,
                 "': ", data_bytes, " data bytes, expected ", h.numel, " float32 for ", h.shape[0], " images of ", C_,
                 "x", H_, "x", W_, " (truncated or corrupt)");
    const std::string csv = (fs::path(dir) / "origin.csv").string();
    std::ifstream f(csv);
    IPSNET_CHECK(f.good(), "proxy origins '", csv, "' cannot be read");
    std::string line;
    std::getline(f, line);  // header
    int64_t row = 0;
    while (std::getline(f, line)) {
      if (line.empty()) continue;
      const size_t a = line.find(',');
      char* end = nullptr;
      const long long r = std::strtoll(line.c_str(), &end, 10);
      const long long o = a == std::string::npos ? -1 : std::strtoll(line.c_str() + a + 1, nullptr, 10);
      IPSNET_CHECK(r == row && o >= 0, "proxy origins '", csv, "': line ", row + 2, " ('", line,
                   "') expected proxy ", row, " and its origin image id");
      origin_.push_back(o);
      ++row;
    }
    IPSNET_CHECK(row == h.shape[0], "proxy origins '", csv, "': ", row, " rows for ", h.shape[0], " images");
  } catch (...) {
    ::close(fd_);
    throw;
  }
}

ProxyStore::~ProxyStore() {
  if (fd_ >= 0) ::close(fd_);
}

void ProxyStore::read(int64_t r, float* dst) const {
  const int64_t n = C_ * H_ * W_;
  IPSNET_CHECK(r >= 0 && r < size() &&
                   pread_all(fd_, dst, static_cast<size_t>(n) * 4, data_offset_ + r * n * 4),
               "proxy images '", path_, "': cannot read proxy ", r);
}

// ---- the training set with proxies -------------------------------------------

ProxyTrainSource::ProxyTrainSource(data::DataSource& base, int64_t n_base, std::string mode)
    : base_(base), n_base_(n_base), mode_(std::move(mode)) {
  IPSNET_CHECK(base.has_pixels(), "proxy_attention: the ", base.kind(),
               " data source has no pixels (feature bags): there is nothing to mask");
  set_stores({});
}

void ProxyTrainSource::set_stores(std::vector<std::shared_ptr<const ProxyStore>> stores) {
  stores_ = std::move(stores);
  entries_.clear();
  for (int64_t i = 0; i < n_base_; ++i) entries_.push_back({i, -1, 0});
  n_proxies_ = 0;
  for (size_t s = 0; s < stores_.size(); ++s) {
    const ProxyStore& st = *stores_[s];
    for (int64_t r = 0; r < st.size(); ++r) {
      const int64_t o = st.origin(r);
      IPSNET_CHECK(o >= 0 && o < n_base_, "proxy origins of '", st.dir(), "': image id ", o,
                   " is outside the training set of ", n_base_, " images");
      const PatchGrid g = base_.grid(o);
      IPSNET_CHECK(st.channels() == base_.channels() && st.height() == g.height && st.width() == g.width,
                   "proxy images of '", st.dir(), "' are ", st.channels(), "x", st.height(), "x", st.width(),
                   " but training image ", o, " is ", base_.channels(), "x", g.height, "x", g.width,
                   " (the run directory belongs to other data)");
      const Entry e{o, static_cast<int>(s), r};
      if (mode_ == "replace")
        entries_[static_cast<size_t>(o)] = e;
      else
        entries_.push_back(e);
      ++n_proxies_;
    }
  }
}

const ProxyTrainSource::Entry& ProxyTrainSource::entry(int64_t i) const {
  IPSNET_CHECK(i >= 0 && i < size(), "training image ", i, " is outside the set of ", size(), " images");
  return entries_[static_cast<size_t>(i)];
}

std::string ProxyTrainSource::describe() const {
  return base_.describe() + ", " + std::to_string(n_base_) + " used, with " + std::to_string(n_proxies_) +
         " proxy images (" + mode_ + ")";
}

std::vector<int64_t> ProxyTrainSource::classes(int64_t i, const std::string& name) const {
  return base_.classes(entry(i).origin, name);
}

int64_t ProxyTrainSource::num_instances(int64_t i) const { return base_.num_instances(entry(i).origin); }

PatchGrid ProxyTrainSource::grid(int64_t i) const { return base_.grid(entry(i).origin); }

void ProxyTrainSource::read_instances(int64_t i, const int64_t* idx, int64_t n, float* dst) const {
  const Entry& e = entry(i);
  if (e.store < 0) return base_.read_instances(e.origin, idx, n, dst);
  const PatchGrid g = base_.grid(e.origin);
  const int64_t C = base_.channels();
  std::vector<float> img(static_cast<size_t>(C * g.height * g.width));
  stores_[static_cast<size_t>(e.store)]->read(e.row, img.data());
  const int64_t pn = g.patch_numel(C);
  for (int64_t k = 0; k < n; ++k) {
    IPSNET_CHECK(idx[k] >= 0 && idx[k] < g.count(), "patch ", idx[k], " of proxy image ", i, " is outside its ",
                 g.count(), " patches");
    float* out = dst + k * pn;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < g.patch_h; ++y)
        std::memcpy(out + (c * g.patch_h + y) * g.patch_w, img.data() + g.source_offset(idx[k], c, y, 0),
                    static_cast<size_t>(g.patch_w) * sizeof(float));
  }
}

bool ProxyTrainSource::instance_is_zero(int64_t i, int64_t p) const {
  const Entry& e = entry(i);
  // A proxy changes pixels only by scaling them or setting a constant: a
  // zero patch of the original stays zero under blended and zero replacement.
  return e.store < 0 ? base_.instance_is_zero(e.origin, p) : false;
}

void ProxyTrainSource::prefetch(int64_t i) const {
  const Entry& e = entry(i);
  if (e.store < 0) base_.prefetch(e.origin);
}

void ProxyTrainSource::read_image(int64_t i, float* dst) const {
  const Entry& e = entry(i);
  if (e.store < 0) return base_.read_image(e.origin, dst);
  stores_[static_cast<size_t>(e.store)]->read(e.row, dst);
}

std::pair<int64_t, int64_t> ProxyTrainSource::lowres_size(int64_t i) const { return base_.lowres_size(entry(i).origin); }

void ProxyTrainSource::read_lowres(int64_t i, float* dst) const {
  const Entry& e = entry(i);
  if (e.store < 0) return base_.read_lowres(e.origin, dst);
  // The proxy's own low-resolution view: its pixels area-averaged to the
  // stored view's size, as the stored views are made.
  const PatchGrid g = base_.grid(e.origin);
  const auto [h, w] = base_.lowres_size(e.origin);
  const int64_t C = base_.channels();
  std::vector<float> img(static_cast<size_t>(C * g.height * g.width));
  stores_[static_cast<size_t>(e.store)]->read(e.row, img.data());
  for (int64_t c = 0; c < C; ++c)
    data::resize_area(img.data() + c * g.height * g.width, g.height, g.width, dst + c * h * w, h, w);
}

// ---- the pixel rule -------------------------------------------------------------

double apply_proxy_rule(float* image, int64_t C, int64_t H, int64_t W, const float* map,
                        const ProxyAttentionConfig& p) {
  const int64_t plane = H * W;
  float value = 0;
  if (p.replace == "mean" || p.replace == "max" || p.replace == "min") {
    double sum = 0;
    float mx = image[0], mn = image[0];
    for (int64_t k = 0; k < C * plane; ++k) {
      sum += image[k];
      mx = std::max(mx, image[k]);
      mn = std::min(mn, image[k]);
    }
    value = p.replace == "mean" ? static_cast<float>(sum / static_cast<double>(C * plane))
                                : p.replace == "max" ? mx : mn;
  }
  const bool blended = p.replace == "blended";
  const float tau = static_cast<float>(p.threshold), lambda = static_cast<float>(p.weight);
  int64_t changed = 0;
  for (int64_t k = 0; k < plane; ++k) {
    const float m = map[k];
    if (!(m > tau)) continue;
    ++changed;
    for (int64_t c = 0; c < C; ++c) {
      float& x = image[c * plane + k];
      x = blended ? (1.0f - lambda * m) * x : value;
    }
  }
  return static_cast<double>(changed) / static_cast<double>(std::max<int64_t>(1, plane));
}

// ---- one proxy step -------------------------------------------------------------

namespace {

struct Scored {
  int64_t id = 0;
  double loss = 0;
  int64_t label = -1;  // softmax: the class; sigmoid: -1
  int64_t predicted = 0;
  bool wrong = false;
};

// An image of the sheet: (C, H, W) float -> RGB (side x side box, aspect kept),
// nearest-neighbour/max-pool downscaled so thin strokes survive.
std::vector<uint8_t> sheet_cell(const std::vector<float>& img, int64_t C, int64_t H, int64_t W, int64_t side,
                                bool is_map, const std::string& normalize, int64_t* oh, int64_t* ow) {
  const int64_t f = std::max<int64_t>(1, (std::max(H, W) + side - 1) / side);
  const int64_t h = (H + f - 1) / f, w = (W + f - 1) / f;
  std::vector<float> disp = img;
  if (!is_map) denormalize_for_display(disp.data(), C, H * W, normalize);
  std::vector<uint8_t> rgb(static_cast<size_t>(h * w * 3), 0);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t c = 0; c < 3; ++c) {
        float v = is_map ? -1.0f : 0.0f;
        const int64_t ch = is_map ? 0 : std::min(c, C - 1);
        for (int64_t yy = y * f; yy < std::min(H, (y + 1) * f); ++yy)
          for (int64_t xx = x * f; xx < std::min(W, (x + 1) * f); ++xx) v = std::max(v, disp[(ch * H + yy) * W + xx]);
        if (is_map) {
          float col[3];
          heat_color(v, col);
          v = col[c];
        }
        rgb[static_cast<size_t>((y * w + x) * 3 + c)] =
            static_cast<uint8_t>(std::lround(std::min(1.0f, std::max(0.0f, v)) * 255.0f));
      }
  *oh = h;
  *ow = w;
  return rgb;
}

}  // namespace

ProxyStepResult run_proxy_step(Method& method, const data::DataSource& train, int64_t n_base, const Config& cfg,
                               const std::string& kind, Device device, int64_t step, int64_t epoch,
                               const std::string& run_dir, uint64_t seed, bool quiet) {
  const auto t0 = std::chrono::steady_clock::now();
  const ProxyAttentionConfig& p = cfg.proxy;
  const TaskConfig* task = &cfg.tasks.front();
  for (const TaskConfig& t : cfg.tasks)
    if (t.name == p.task) task = &t;
  ProxyStepResult res;
  res.step = step;
  res.epoch = epoch;
  res.dir = proxy_cycle_dir(run_dir, step);

  // 1. Every image of the training set scored by the current model (eval mode,
  //    no gradients, as evaluation does): its loss in the explained task and
  //    whether the prediction is wrong.
  std::vector<Scored> scored;
  {
    NoGradGuard ng;
    TrainModeGuard eval_mode(method.model(), false);
    PrecisionGuard precision(cfg.precision == "bf16");
    Progress prog("proxy step " + std::to_string(step) + ": scoring", n_base, !quiet);
    for (int64_t s = 0, bi = 0; s < n_base; s += cfg.B, ++bi) {
      std::vector<int64_t> ids;
      for (int64_t i = s; i < std::min(n_base, s + cfg.B); ++i) ids.push_back(i);
      Generator gen(seed, static_cast<uint64_t>(bi));
      Batch batch(train, ids, device, cfg.eager, cfg.B_seq);
      method.select(batch, false, gen);
      MethodOutput out = method.forward(batch, {});
      std::map<std::string, Tensor> targets = batch_targets(train, ids, {*task});
      const Tensor logits = out.logits.at(task->name).detach().to(Device::cpu()).contiguous();
      const int64_t K = logits.size(1);
      const std::vector<float> lv = logits.to_vector<float>();
      if (task->act_fn == "softmax") {
        const std::vector<int64_t> y = targets.at(task->name).to_vector<int64_t>();
        for (size_t b = 0; b < ids.size(); ++b) {
          const float* row = lv.data() + static_cast<int64_t>(b) * K;
          const float mx = *std::max_element(row, row + K);
          double z = 0;
          for (int64_t c = 0; c < K; ++c) z += std::exp(static_cast<double>(row[c] - mx));
          Scored sc;
          sc.id = ids[b];
          sc.label = y[b];
          sc.predicted = std::max_element(row, row + K) - row;
          sc.loss = std::log(z) - static_cast<double>(row[y[b]] - mx);
          sc.wrong = sc.predicted != y[b];
          scored.push_back(sc);
        }
      } else {
        const std::vector<float> y = targets.at(task->name).to_vector<float>();
        for (size_t b = 0; b < ids.size(); ++b) {
          const float* row = lv.data() + static_cast<int64_t>(b) * K;
          const float* t = y.data() + static_cast<int64_t>(b) * K;
          Scored sc;
          sc.id = ids[b];
          sc.predicted = std::max_element(row, row + K) - row;
          double l = 0;
          for (int64_t c = 0; c < K; ++c) {
            const double x = row[c];
            l += std::max(x, 0.0) - x * t[c] + std::log1p(std::exp(-std::fabs(x)));  // BCE with logits
            sc.wrong = sc.wrong || ((x > 0) != (t[c] > 0.5f));
          }
          sc.loss = l / static_cast<double>(K);
          scored.push_back(sc);
        }
      }
      prog.update(static_cast<int64_t>(ids.size()));
    }
    prog.finish();
  }

  // 2. The chosen: the candidates by loss, highest first (ties by image id).
  std::vector<Scored> cand;
  for (const Scored& s : scored)
    if (p.select == "highest_loss" || s.wrong) cand.push_back(s);
  std::stable_sort(cand.begin(), cand.end(), [](const Scored& a, const Scored& b) { return a.loss > b.loss; });
  res.candidates = static_cast<int64_t>(cand.size());
  const int64_t n_pick =
      p.count > 0 ? std::min<int64_t>(p.count, res.candidates)
                  : static_cast<int64_t>(std::llround(p.fraction * static_cast<double>(res.candidates)));
  cand.resize(static_cast<size_t>(n_pick));
  std::stable_sort(cand.begin(), cand.end(), [](const Scored& a, const Scored& b) { return a.id < b.id; });
  res.changed = n_pick;

  // 3. Explained, changed and written as RUN/proxy/cycle_<step>/ (built under
  //    a temporary name and renamed: an interrupted step leaves nothing).
  const int64_t C = train.channels();
  int64_t bytes = 0;
  for (const Scored& s : cand) {
    const PatchGrid g = train.grid(s.id);
    bytes += C * g.height * g.width * 4;
  }
  const std::string parent = (fs::path(run_dir) / "proxy").string();
  std::error_code ec;
  fs::create_directories(parent, ec);
  IPSNET_CHECK(fs::is_directory(parent), "cannot create '", parent, "': ", ec ? ec.message() : "not a directory");
  const long long free_bytes = free_disk_bytes(parent);
  IPSNET_CHECK(free_bytes < 0 || static_cast<double>(bytes) * 1.05 + 1048576.0 <= static_cast<double>(free_bytes),
               "proxy step ", step, ": its ", n_pick, " proxy images need ", human_bytes(static_cast<double>(bytes)),
               " but '", parent, "' has ", human_bytes(static_cast<double>(free_bytes)), " free");
  // A step killed (SIGKILL, power) while writing left its temporary: the run
  // directory is locked by this run, so it can go.
  const std::string stale = fs::path(res.dir).filename().string() + ".tmp-";
  for (const auto& e : fs::directory_iterator(parent, ec))
    if (e.path().filename().string().rfind(stale, 0) == 0) fs::remove_all(e.path(), ec);
  TempDirectory tmp(res.dir, /*force=*/true);
  int64_t H0 = 0, W0 = 0;
  if (!cand.empty()) {
    const PatchGrid g = train.grid(cand.front().id);
    H0 = g.height;
    W0 = g.width;
  }
  for (const Scored& s : cand) {
    const PatchGrid g = train.grid(s.id);
    IPSNET_CHECK(g.height == H0 && g.width == W0, "proxy_attention: the chosen training images have different "
                 "sizes (", H0, "x", W0, " and ", g.height, "x", g.width, "); proxy steps need images of one size");
  }
  AtomicFile images((fs::path(tmp.path()) / "images.npy").string());
  images.write(data::npy_header("<f4", {n_pick, C, H0, W0}));
  std::ostringstream origin;
  origin << "proxy,origin,task,label,predicted,loss,changed_pixels\n";
  struct SheetRow {
    std::vector<float> original, map, proxy;
  };
  std::vector<SheetRow> sheet;
  double changed_sum = 0, loss_sum = 0;
  {
    Progress prog("proxy step " + std::to_string(step) + ": " + kind, n_pick, !quiet);
    PrecisionGuard precision(cfg.precision == "bf16");
    for (int64_t s = 0, bi = 0; s < n_pick; s += cfg.B, ++bi) {
      std::vector<int64_t> ids, classes;
      for (int64_t k = s; k < std::min(n_pick, s + cfg.B); ++k) {
        ids.push_back(cand[static_cast<size_t>(k)].id);
        classes.push_back(cand[static_cast<size_t>(k)].predicted);  // the predicted class, as the thesis
      }
      Generator gen(seed ^ 0x5bd1e995ull, static_cast<uint64_t>(bi));
      Batch batch(train, ids, device, /*eager=*/false, cfg.B_seq);
      const Tensor maps = method.explain(batch, kind, task->name, classes, gen).contiguous();
      IPSNET_CHECK(maps.dim() == 3 && maps.size(0) == static_cast<int64_t>(ids.size()) && maps.size(1) == H0 &&
                       maps.size(2) == W0,
                   "method '", method.name(), "': explanation '", kind, "' gave maps of shape ",
                   shape_str(maps.shape()), ", expected (", ids.size(), ", ", H0, ", ", W0, ")");
      const std::vector<float> mv = maps.to_vector<float>();
      for (size_t b = 0; b < ids.size(); ++b) {
        std::vector<float> img(static_cast<size_t>(C * H0 * W0));
        train.read_image(ids[b], img.data());
        const float* m = mv.data() + static_cast<int64_t>(b) * H0 * W0;
        const bool keep = static_cast<int64_t>(sheet.size()) < p.sheet_images;
        SheetRow row;
        if (keep) {
          row.original = img;
          row.map.assign(m, m + H0 * W0);
        }
        const double frac = apply_proxy_rule(img.data(), C, H0, W0, m, p);
        images.write(img.data(), img.size() * sizeof(float));
        const Scored& sc = cand[static_cast<size_t>(s) + b];
        origin << s + static_cast<int64_t>(b) << "," << sc.id << "," << task->name << "," << sc.label << ","
               << sc.predicted << "," << std::setprecision(9) << sc.loss << "," << frac << "\n";
        changed_sum += frac;
        loss_sum += sc.loss;
        if (keep) {
          row.proxy = std::move(img);
          sheet.push_back(std::move(row));
        }
      }
      prog.update(static_cast<int64_t>(ids.size()));
    }
    prog.finish();
  }
  images.commit();
  write_file_atomic((fs::path(tmp.path()) / "origin.csv").string(), origin.str());
  if (!sheet.empty()) {
    // original | map | proxy, one row per image, 4 px gaps.
    const int64_t side = 256, gap = 4;
    std::vector<std::vector<uint8_t>> cells;
    int64_t ch = 0, cw = 0;
    for (const SheetRow& r : sheet)
      for (int k = 0; k < 3; ++k) {
        const std::vector<float>& v = k == 0 ? r.original : k == 1 ? r.map : r.proxy;
        cells.push_back(sheet_cell(v, k == 1 ? 1 : C, H0, W0, side, k == 1, cfg.normalize, &ch, &cw));
      }
    const int64_t rows = static_cast<int64_t>(sheet.size());
    const int64_t SW = 3 * cw + 4 * gap, SH = rows * ch + (rows + 1) * gap;
    std::vector<uint8_t> png(static_cast<size_t>(SW * SH * 3), 255);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < 3; ++k) {
        const std::vector<uint8_t>& cell = cells[static_cast<size_t>(r * 3 + k)];
        const int64_t y0 = gap + r * (ch + gap), x0 = gap + k * (cw + gap);
        for (int64_t y = 0; y < ch; ++y)
          std::memcpy(&png[static_cast<size_t>(((y0 + y) * SW + x0) * 3)], &cell[static_cast<size_t>(y * cw * 3)],
                      static_cast<size_t>(cw * 3));
      }
    data::write_png((fs::path(tmp.path()) / "sheet.png").string(), SW, SH, 3, png);
  }
  tmp.commit();
  res.mean_loss = n_pick ? loss_sum / static_cast<double>(n_pick) : 0;
  res.changed_pixels = n_pick ? changed_sum / static_cast<double>(n_pick) : 0;
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace train
}  // namespace ipsnet

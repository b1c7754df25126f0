#include "train/batch.h"

#include <algorithm>

#include "engine/backend/backend.h"

namespace ipsnet {
namespace train {

void check_tasks(const data::DataSource& source, const std::vector<TaskConfig>& tasks) {
  const std::vector<data::LabelSpec> labels = source.labels();
  std::string names;
  for (const data::LabelSpec& l : labels) names += (names.empty() ? "" : ", ") + l.name;
  for (const TaskConfig& t : tasks) {
    auto it = std::find_if(labels.begin(), labels.end(), [&](const data::LabelSpec& l) { return l.name == t.name; });
    IPSNET_CHECK(it != labels.end(), "task '", t.name, "': the ", source.kind(), " dataset stores the labels ",
                 names.empty() ? std::string("(none)") : names);
    if (it->multi_label) {
      IPSNET_CHECK(t.act_fn == "sigmoid" && t.n_class == it->n_class, "task '", t.name,
                   "': a multi-label task needs act_fn sigmoid and n_class ", it->n_class, ", got ", t.act_fn, " and ",
                   t.n_class);
    } else {
      IPSNET_CHECK(t.act_fn == "softmax", "task '", t.name, "': a single-label task needs act_fn softmax, got ",
                   t.act_fn);
      IPSNET_CHECK(t.n_class >= it->n_class, "task '", t.name, "': its labels need n_class ", it->n_class, ", got ",
                   t.n_class);
    }
  }
}

std::map<std::string, Tensor> batch_targets(const data::DataSource& source, const std::vector<int64_t>& ids,
                                            const std::vector<TaskConfig>& tasks) {
  std::map<std::string, Tensor> out;
  const int64_t B = static_cast<int64_t>(ids.size());
  for (const TaskConfig& t : tasks) {
    if (t.act_fn == "sigmoid") {
      Tensor y = Tensor::zeros({B, t.n_class});
      float* p = y.data<float>();
      for (int64_t b = 0; b < B; ++b)
        for (int64_t c : source.classes(ids[static_cast<size_t>(b)], t.name)) {
          IPSNET_CHECK(c >= 0 && c < t.n_class, "task '", t.name, "': image ", ids[static_cast<size_t>(b)],
                       " has class ", c, " outside n_class ", t.n_class);
          p[b * t.n_class + c] = 1.0f;
        }
      out[t.name] = y;
    } else {
      std::vector<int64_t> y(static_cast<size_t>(B));
      for (int64_t b = 0; b < B; ++b) {
        std::vector<int64_t> c = source.classes(ids[static_cast<size_t>(b)], t.name);
        IPSNET_CHECK(c.size() == 1, "task '", t.name, "': image ", ids[static_cast<size_t>(b)], " has ", c.size(),
                     " classes, a softmax task needs one");
        y[static_cast<size_t>(b)] = c[0];
      }
      out[t.name] = Tensor::from_vector(y, {B});
    }
  }
  return out;
}

namespace {
std::vector<int64_t> with_batch(const std::vector<int64_t>& shape, int64_t n) {
  std::vector<int64_t> s = {n};
  s.insert(s.end(), shape.begin(), shape.end());
  return s;
}
int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}
// Runs [s, e) of equal image ids in a (image, patch) list.
template <typename F>
void for_each_run(const std::vector<int64_t>& image, F&& f) {
  for (size_t s = 0; s < image.size();) {
    size_t e = s + 1;
    while (e < image.size() && image[e] == image[s]) ++e;
    f(static_cast<int64_t>(s), static_cast<int64_t>(e));
    s = e;
  }
}
}  // namespace

// ---- lazy ------------------------------------------------------------------

LazySource::LazySource(const data::DataSource& source, std::vector<int64_t> ids, Device device)
    : source_(source), ids_(std::move(ids)), device_(device) {
  IPSNET_CHECK(!ids_.empty(), "a batch needs at least one image");
  n_ = source_.num_instances(ids_[0]);
  for (int64_t id : ids_)
    IPSNET_CHECK(source_.num_instances(id) == n_, "image ", id, " has ", source_.num_instances(id),
                 " instances and image ", ids_[0], " has ", n_,
                 ": images of different sizes need B_seq: 1 (one image per selection)");
}

Tensor LazySource::get(const std::vector<int64_t>& image, const std::vector<int64_t>& patch) {
  const std::vector<int64_t> shape = source_.instance_shape();
  const int64_t row = numel_of(shape);
  Tensor out = Tensor::empty(with_batch(shape, static_cast<int64_t>(image.size())));
  float* p = out.data<float>();
  for_each_run(image, [&](int64_t s, int64_t e) {
    source_.read_instances(ids_[static_cast<size_t>(image[static_cast<size_t>(s)])], patch.data() + s, e - s,
                           p + s * row);
  });
  return device_.is_cpu() ? out : out.to(device_);
}

bool LazySource::is_zero(int64_t image, int64_t patch) const {
  return source_.instance_is_zero(ids_[static_cast<size_t>(image)], patch);
}

// ---- eager -----------------------------------------------------------------

EagerSource::EagerSource(const data::DataSource& source, const std::vector<int64_t>& ids, Device device)
    : pixels_(source.has_pixels()) {
  const int64_t B = static_cast<int64_t>(ids.size());
  IPSNET_CHECK(B >= 1, "a batch needs at least one image");
  n_ = source.num_instances(ids[0]);
  for (int64_t id : ids)
    IPSNET_CHECK(source.num_instances(id) == n_, "image ", id, " has ", source.num_instances(id),
                 " instances and image ", ids[0], " has ", n_,
                 ": eager loading of images of different sizes needs B_seq: 1");
  if (pixels_) {
    grid_ = source.grid(ids[0]);
    const int64_t C = source.channels(), H = grid_.height, W = grid_.width;
    data_ = Tensor::empty({B, C, H, W});
    for (int64_t b = 0; b < B; ++b) source.read_image(ids[static_cast<size_t>(b)], data_.data<float>() + b * C * H * W);
    // Which patches hold only zeros (the exact empty-patch shortcut).
    zero_.assign(static_cast<size_t>(B * n_), 0);
    for (int64_t b = 0; b < B; ++b) {
      const float* img = data_.data<float>() + b * C * H * W;
      for (int64_t p = 0; p < n_; ++p) {
        bool z = true;
        for (int64_t c = 0; c < C && z; ++c)
          for (int64_t y = 0; y < grid_.patch_h && z; ++y)
            for (int64_t x = 0; x < grid_.patch_w && z; ++x) z = img[grid_.source_offset(p, c, y, x)] == 0.0f;
        zero_[static_cast<size_t>(b * n_ + p)] = z;
      }
    }
  } else {
    const std::vector<int64_t> shape = source.instance_shape();
    data_ = Tensor::empty(with_batch(with_batch(shape, n_), B));
    std::vector<int64_t> all(static_cast<size_t>(n_));
    for (int64_t p = 0; p < n_; ++p) all[static_cast<size_t>(p)] = p;
    for (int64_t b = 0; b < B; ++b)
      source.read_instances(ids[static_cast<size_t>(b)], all.data(), n_, data_.data<float>() + b * n_ * numel_of(shape));
  }
  if (!device.is_cpu()) data_ = data_.to(device);
}

Tensor EagerSource::get(const std::vector<int64_t>& image, const std::vector<int64_t>& patch) {
  const int64_t n = static_cast<int64_t>(image.size());
  if (!pixels_) {
    std::vector<int64_t> flat(image.size());
    for (size_t i = 0; i < image.size(); ++i) flat[i] = image[i] * n_ + patch[i];
    Tensor all = data_.flatten(0, 1);  // (B*N, F)
    return ops::index_select(all, 0, Tensor::from_vector(flat, {n}, all.device()));
  }
  // Cut on the device: one backend call per run of patches of the same image.
  const int64_t C = data_.size(1);
  Tensor out = Tensor::empty({n, C, grid_.patch_h, grid_.patch_w}, data_.dtype(), data_.device());
  Backend& be = backend_for(data_.device());
  for_each_run(image, [&](int64_t s, int64_t e) {
    const int64_t b = image[static_cast<size_t>(s)];
    std::vector<int64_t> ids(patch.begin() + s, patch.begin() + e);
    Tensor idx = Tensor::from_vector(ids, {1, e - s}, data_.device());
    be.cut_patches(data_.slice(0, b, b + 1), idx, out.slice(0, s, e).unsqueeze(0), grid_.patch_h, grid_.patch_w,
                   grid_.stride_h, grid_.stride_w);
  });
  return out;
}

bool EagerSource::is_zero(int64_t image, int64_t patch) const {
  return pixels_ && zero_[static_cast<size_t>(image * n_ + patch)] != 0;
}

// ---- batch -----------------------------------------------------------------

Batch::Batch(const data::DataSource& source, std::vector<int64_t> ids, Device device, bool eager_mode, int64_t seq)
    : source_(source), ids_(std::move(ids)), device_(device), eager_mode_(eager_mode),
      seq_(std::max<int64_t>(1, std::min<int64_t>(seq, static_cast<int64_t>(ids_.size())))) {
  if (eager_mode_) eager.resize(static_cast<size_t>(parts()));
  // Lazy loading of images with different instance counts (feature bags)
  // selects B_seq images at a time; equal counts keep one part.
  if (!eager_mode_ && seq_ < size()) {
    const int64_t n0 = source_.num_instances(ids_[0]);
    for (int64_t id : ids_)
      if (source_.num_instances(id) != n0) {
        lazy_parts_ = (size() + seq_ - 1) / seq_;
        break;
      }
  }
}

int64_t Batch::parts() const { return eager_mode_ ? (size() + seq_ - 1) / seq_ : lazy_parts_; }

std::vector<int64_t> Batch::part_ids(int64_t k) const {
  if (!eager_mode_ && lazy_parts_ == 1) return ids_;
  const int64_t s = k * seq_, e = std::min(size(), s + seq_);
  return std::vector<int64_t>(ids_.begin() + s, ids_.begin() + e);
}

void Batch::prepare() {
  if (eager_mode_) {
    // Only the first B_seq images are made resident ahead; the others are
    // built when a method reaches them and dropped once it is done with them
    // (eager sequential holds B_seq images).
    if (!eager[0]) eager[0] = std::make_unique<EagerSource>(source_, part_ids(0), Device::cpu());
  } else {
    for (int64_t id : ids_) source_.prefetch(id);
  }
}

PatchSource& Batch::part(int64_t k) {
  IPSNET_CHECK(k >= 0 && k < parts(), "batch part ", k, " of ", parts());
  if (!eager_mode_) {
    if (!lazy_ || lazy_part_ != k) {
      lazy_ = std::make_unique<LazySource>(source_, part_ids(k), device_);
      lazy_part_ = k;
    }
    return *lazy_;
  }
  std::unique_ptr<EagerSource>& slot = eager[static_cast<size_t>(k)];
  if (!slot) slot = std::make_unique<EagerSource>(source_, part_ids(k), Device::cpu());
  if (!device_.is_cpu()) slot->to(device_);
  return *slot;
}

void Batch::release(int64_t k) {
  if (eager_mode_) eager[static_cast<size_t>(k)].reset();
  if (!eager_mode_ && lazy_parts_ > 1 && lazy_part_ == k) lazy_.reset(), lazy_part_ = -1;
}

}  // namespace train
}  // namespace ipsnet

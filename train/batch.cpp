#include "train/batch.h"

#include <cstring>

namespace ipsnet {
namespace train {

namespace {
int label_of(const data::ImageMeta& m, const std::string& task, bool* ok) {
  *ok = true;
  if (task == "majority") return m.majority;
  if (task == "max") return m.max;
  if (task == "top") return m.top;
  *ok = false;
  return -1;
}
}  // namespace

void check_tasks(const data::DatasetReader& reader, const std::vector<TaskConfig>& tasks) {
  if (reader.size() == 0) return;
  const data::ImageMeta& m = reader.meta(0);
  for (const TaskConfig& t : tasks) {
    if (t.name == "multi") {
      IPSNET_CHECK(t.act_fn == "sigmoid" && t.n_class == 10, "task 'multi': expected act_fn sigmoid and n_class 10, got ",
                   t.act_fn, " and ", t.n_class);
      continue;
    }
    bool ok;
    int v = label_of(m, t.name, &ok);
    IPSNET_CHECK(ok, "task '", t.name, "': the dataset has labels majority, max, top and multi");
    IPSNET_CHECK(v >= 0, "task '", t.name, "': this dataset does not store that label (imported without it?)");
    IPSNET_CHECK(t.act_fn == "softmax", "task '", t.name, "': a single-label task needs act_fn softmax, got ", t.act_fn);
    IPSNET_CHECK(t.n_class >= 10, "task '", t.name, "': digit labels need n_class 10, got ", t.n_class);
  }
}

std::map<std::string, Tensor> batch_targets(const data::DatasetReader& reader, const std::vector<int64_t>& ids,
                                            const std::vector<TaskConfig>& tasks) {
  std::map<std::string, Tensor> out;
  const int64_t B = static_cast<int64_t>(ids.size());
  for (const TaskConfig& t : tasks) {
    if (t.name == "multi") {
      Tensor y = Tensor::zeros({B, 10});
      float* p = y.data<float>();
      for (int64_t b = 0; b < B; ++b) {
        const auto& mh = reader.meta(ids[static_cast<size_t>(b)]).multi;
        for (int c = 0; c < 10; ++c) p[b * 10 + c] = mh[static_cast<size_t>(c)] ? 1.0f : 0.0f;
      }
      out[t.name] = y;
    } else {
      std::vector<int64_t> y(static_cast<size_t>(B));
      for (int64_t b = 0; b < B; ++b) {
        bool ok;
        y[static_cast<size_t>(b)] = label_of(reader.meta(ids[static_cast<size_t>(b)]), t.name, &ok);
      }
      out[t.name] = Tensor::from_vector(y, {B});
    }
  }
  return out;
}

void unfold_patches(const float* image, const PatchGrid& g, float* dst) {
  const int64_t n = g.count(), s = g.size;
  for (int64_t p = 0; p < n; ++p) {
    const int64_t r0 = g.row0(p), c0 = g.col0(p);
    float* d = dst + p * s * s;
    for (int64_t r = 0; r < s; ++r) std::memcpy(d + r * s, image + (r0 + r) * g.width + c0, static_cast<size_t>(s) * 4);
  }
}

LazySource::LazySource(const data::DatasetReader& reader, std::vector<int64_t> ids, PatchGrid grid, Device device)
    : reader_(reader), ids_(std::move(ids)), grid_(grid), device_(device) {}

Tensor LazySource::get(const std::vector<int64_t>& image, const std::vector<int64_t>& patch) {
  const int64_t n = static_cast<int64_t>(image.size()), s = grid_.size;
  Tensor out = Tensor::empty({n, 1, s, s});
  float* p = out.data<float>();
  for (int64_t i = 0; i < n; ++i) {
    int64_t pi = patch[static_cast<size_t>(i)];
    reader_.read_region(ids_[static_cast<size_t>(image[static_cast<size_t>(i)])], grid_.row0(pi), grid_.col0(pi), s, s,
                        p + i * s * s);
  }
  return device_.is_cpu() ? out : out.to(device_);
}

bool LazySource::is_zero(int64_t image, int64_t patch) const {
  return reader_.region_is_zero(ids_[static_cast<size_t>(image)], grid_.row0(patch), grid_.col0(patch), grid_.size,
                                grid_.size);
}

EagerSource::EagerSource(const data::DatasetReader& reader, const std::vector<int64_t>& ids, PatchGrid grid,
                         Device device) {
  const int64_t B = static_cast<int64_t>(ids.size()), N = grid.count(), s = grid.size;
  Tensor host = Tensor::empty({B, N, 1, s, s});
  std::vector<float> image(static_cast<size_t>(grid.height * grid.width));
  zero_.assign(static_cast<size_t>(B * N), 0);
  for (int64_t b = 0; b < B; ++b) {
    reader.read_image(ids[static_cast<size_t>(b)], image.data());
    float* dst = host.data<float>() + b * N * s * s;
    unfold_patches(image.data(), grid, dst);
    for (int64_t p = 0; p < N; ++p) {
      const float* q = dst + p * s * s;
      bool z = true;
      for (int64_t e = 0; e < s * s && z; ++e) z = q[e] == 0.0f;
      zero_[static_cast<size_t>(b * N + p)] = z;
    }
  }
  patches_ = device.is_cpu() ? host : host.to(device);
}

Tensor EagerSource::get(const std::vector<int64_t>& image, const std::vector<int64_t>& patch) {
  const int64_t N = patches_.size(1);
  std::vector<int64_t> flat(image.size());
  for (size_t i = 0; i < image.size(); ++i) flat[i] = image[i] * N + patch[i];
  Tensor all = patches_.flatten(0, 1);  // (B*N, 1, h, w)
  return ops::index_select(all, 0, Tensor::from_vector(flat, {static_cast<int64_t>(flat.size())}, all.device()));
}

bool EagerSource::is_zero(int64_t image, int64_t patch) const {
  return zero_[static_cast<size_t>(image * patches_.size(1) + patch)] != 0;
}

}  // namespace train
}  // namespace ipsnet

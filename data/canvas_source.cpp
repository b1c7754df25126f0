#include "data/canvas_source.h"

#include <filesystem>

#include "engine/backend/geometry.h"
#include "engine/common/error.h"

namespace ipsnet {
namespace data {

namespace fs = std::filesystem;

CanvasSource::CanvasSource(DatasetReader reader, const SourceOptions& o) : reader_(std::move(reader)) {
  // Canvases are used as stored: the photographs' pixel options do not apply.
  IPSNET_CHECK(o.normalize == "none", "config key 'normalize': ", o.normalize,
               " applies to photographs; canvas data is used as stored");
  IPSNET_CHECK(o.jitter == 0 && o.translate == 0,
               "config keys 'augment_jitter', 'augment_translate' apply to photographs, not to canvas data");
  const int64_t size = o.patch_size > 0 ? o.patch_size : std::min(reader_.height(), reader_.width());
  grid_ = make_patch_grid(reader_.height(), reader_.width(), size, o.patch_stride > 0 ? o.patch_stride : size);
}

bool CanvasSource::detect(const std::string& dir) {
  return fs::exists(fs::path(dir) / "train.ipsd") || fs::exists(fs::path(dir) / "test.ipsd");
}

std::unique_ptr<DataSource> CanvasSource::open(const std::string& dir, const std::string& split,
                                               const SourceOptions& options) {
  return std::make_unique<CanvasSource>(DatasetReader::open(dir, split), options);
}

std::string CanvasSource::describe() const {
  return str_cat(reader_.size(), " ", reader_.style(), " canvases of ", reader_.height(), "x", reader_.width(),
                 ", N = ", grid_.count(), " patches of ", grid_.patch_h, "x", grid_.patch_w);
}

std::vector<LabelSpec> CanvasSource::labels() const {
  std::vector<LabelSpec> out;
  if (reader_.size() == 0) return out;
  // Datasets imported from the reference's files may lack some labels (-1).
  const ImageMeta& m = reader_.meta(0);
  if (m.majority >= 0) out.push_back({"majority", 10, false});
  if (m.max >= 0) out.push_back({"max", 10, false});
  if (m.top >= 0) out.push_back({"top", 10, false});
  out.push_back({"multi", 10, true});
  return out;
}

std::vector<int64_t> CanvasSource::classes(int64_t i, const std::string& name) const {
  const ImageMeta& m = reader_.meta(i);
  if (name == "multi") {
    std::vector<int64_t> out;
    for (int c = 0; c < 10; ++c)
      if (m.multi[static_cast<size_t>(c)]) out.push_back(c);
    return out;
  }
  int v = name == "majority" ? m.majority : name == "max" ? m.max : name == "top" ? m.top : -2;
  IPSNET_CHECK(v != -2, "canvas datasets have the labels majority, max, top and multi, not '", name, "'");
  IPSNET_CHECK(v >= 0, "image ", i, " has no '", name, "' label (imported without it?)");
  return {v};
}

void CanvasSource::read_instances(int64_t i, const int64_t* idx, int64_t n, float* dst) const {
  const int64_t ph = grid_.patch_h, pw = grid_.patch_w;
  for (int64_t k = 0; k < n; ++k)
    reader_.read_region(i, grid_.row0(idx[k]), grid_.col0(idx[k]), ph, pw, dst + k * ph * pw);
}

bool CanvasSource::instance_is_zero(int64_t i, int64_t p) const {
  return reader_.region_is_zero(i, grid_.row0(p), grid_.col0(p), grid_.patch_h, grid_.patch_w);
}

std::pair<int64_t, int64_t> CanvasSource::lowres_size(int64_t) const {
  IPSNET_CHECK(reader_.has_lowres(), "this ", reader_.style(), " dataset has no low-resolution view");
  return {reader_.lowres_height(), reader_.lowres_width()};
}

}  // namespace data
}  // namespace ipsnet

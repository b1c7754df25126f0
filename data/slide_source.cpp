// The "slides" data source (data/slide_source.h).
#include "data/slide_source.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/wsi_slide.h"
#include "data/wsi_tiles.h"
#include "engine/common/error.h"

namespace ipsnet {
namespace data {

namespace {
constexpr const char* kLabel = "metastases";
namespace fs = std::filesystem;
}  // namespace

struct SlideSource::Open {
  SlideTiles tiles;
  std::unique_ptr<WsiSlide> slide;
};

SlideSource::~SlideSource() = default;

bool SlideSource::detect(const std::string& dir) {
  return fs::is_regular_file(dir + "/slides.csv") && fs::is_directory(dir + "/tiles");
}

std::unique_ptr<DataSource> SlideSource::open(const std::string& dir, const std::string& split,
                                              const SourceOptions& options) {
  IPSNET_CHECK(options.normalize == "none" || options.normalize == "imagenet",
               "the slides data source: normalize '", options.normalize, "' is not one of none, imagenet");
  IPSNET_CHECK(options.jitter == 0 && options.translate == 0,
               "the slides data source has no augmentation: augment_jitter and augment_translate must be 0 (got ",
               options.jitter, " and ", options.translate, ")");
  const std::string csv = dir + "/slides.csv";
  std::ifstream in(csv);
  IPSNET_CHECK(in.good(), "cannot open '", csv, "'");
  std::string line;
  std::getline(in, line);
  IPSNET_CHECK(line.rfind("name,split,label,tiles,slide", 0) == 0, csv, ": unexpected header '", line,
               "' (expected name,split,label,tiles,slide from `ipsnet wsi-tiles`)");
  auto src = std::unique_ptr<SlideSource>(new SlideSource());
  src->dir_ = dir;
  src->split_ = split;
  src->normalize_ = options.normalize;
  std::vector<std::string> splits;
  int lineno = 1;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty()) continue;
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string c; std::getline(ss, c, ',');) f.push_back(c);
    // The slide path is the last field and may itself hold commas.
    if (f.size() > 5) {
      for (size_t k = 5; k < f.size(); ++k) f[4] += "," + f[k];
      f.resize(5);
    }
    IPSNET_CHECK(f.size() == 5, csv, ":", lineno, ": expected name,split,label,tiles,slide, got '", line, "'");
    if (std::find(splits.begin(), splits.end(), f[1]) == splits.end()) splits.push_back(f[1]);
    if (f[1] != split) continue;
    Row r;
    r.name = f[0];
    try {
      size_t used = 0;
      r.label = std::stoll(f[2], &used);
      IPSNET_CHECK(used == f[2].size(), "");
      r.n = std::stoll(f[3], &used);
      IPSNET_CHECK(used == f[3].size(), "");
    } catch (const std::exception&) {
      IPSNET_FAIL(csv, ":", lineno, ": label and tiles must be integers in '", line, "'");
    }
    IPSNET_CHECK(r.n >= 1, csv, ":", lineno, ": slide '", r.name, "' has ", r.n, " tiles (expected >= 1)");
    r.slide = fs::path(f[4]).is_absolute() ? f[4] : dir + "/" + f[4];
    r.tiles_file = dir + "/tiles/" + r.name + ".tiles";
    src->rows_.push_back(std::move(r));
  }
  std::string known;
  for (const auto& s : splits) known += (known.empty() ? "" : ", ") + (s.empty() ? std::string("(none)") : s);
  IPSNET_CHECK(!src->rows_.empty(), "'", dir, "' holds no slides of split '", split, "' (its splits: ",
               known.empty() ? std::string("none") : known, ")");
  // The tile geometry from the first slide's tile file (the others are
  // checked against it when they are opened).
  const SlideTiles first = read_tiles_file(src->rows_[0].tiles_file);
  src->tile_size_ = first.out_size;
  src->crop_ = options.patch_size > 0 ? options.patch_size : first.out_size;
  IPSNET_CHECK(src->crop_ <= src->tile_size_, "config key 'patch_size': ", src->crop_, " is larger than the tiles (",
               src->tile_size_, " px) of '", dir, "' (patch_size is the side handed to the encoder: the tile side, ",
               "or less for a centre crop)");
  return src;
}

std::string SlideSource::describe() const {
  int64_t lo = rows_[0].n, hi = lo, sum = 0, pos = 0;
  for (const Row& r : rows_) {
    lo = std::min(lo, r.n);
    hi = std::max(hi, r.n);
    sum += r.n;
    pos += r.label == 1;
  }
  return str_cat("[", split_, "] ", rows_.size(), " slides (", pos, " positive), tiles of ", tile_size_, " px",
                 crop_ < tile_size_ ? str_cat(" cropped to ", crop_) : std::string(), " read through OpenSlide, ", lo,
                 " to ", hi, " tiles (mean ", sum / static_cast<int64_t>(rows_.size()), ")");
}

std::vector<LabelSpec> SlideSource::labels() const { return {{kLabel, 1, true}}; }

std::vector<int64_t> SlideSource::classes(int64_t i, const std::string& name) const {
  IPSNET_CHECK(name == kLabel, "the slides data source stores the label '", kLabel, "', not '", name, "'");
  IPSNET_CHECK(i >= 0 && i < size(), "slide ", i, " is outside [0, ", size(), ")");
  const Row& r = rows_[static_cast<size_t>(i)];
  IPSNET_CHECK(r.label == 0 || r.label == 1, "slide '", r.name, "' has no label (", r.label,
               "): give labels to `ipsnet wsi-tiles` (CAMELYON16 layout or --labels)");
  return r.label == 1 ? std::vector<int64_t>{0} : std::vector<int64_t>{};
}

int64_t SlideSource::num_instances(int64_t i) const {
  IPSNET_CHECK(i >= 0 && i < size(), "slide ", i, " is outside [0, ", size(), ")");
  return rows_[static_cast<size_t>(i)].n;
}

std::shared_ptr<const SlideSource::Open> SlideSource::slide(int64_t i) const {
  IPSNET_CHECK(i >= 0 && i < size(), "slide ", i, " is outside [0, ", size(), ")");
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t k = 0; k < open_.size(); ++k)
      if (open_[k].first == i) {
        auto hit = open_[k];
        open_.erase(open_.begin() + static_cast<std::ptrdiff_t>(k));
        open_.push_back(hit);
        return hit.second;
      }
  }
  // Opened outside the lock (another thread may open the same slide: the
  // first one stored wins, the other is dropped).
  const Row& r = rows_[static_cast<size_t>(i)];
  auto o = std::make_shared<Open>();
  o->tiles = read_tiles_file(r.tiles_file);
  IPSNET_CHECK(static_cast<int64_t>(o->tiles.tiles.size()) == r.n, "the tile file '", r.tiles_file, "' holds ",
               o->tiles.tiles.size(), " tiles but ", dir_, "/slides.csv says ", r.n);
  IPSNET_CHECK(o->tiles.out_size == tile_size_, "the tile file '", r.tiles_file, "' has tiles of ",
               o->tiles.out_size, " px but the first slide of '", dir_, "' has ", tile_size_,
               ": cut every slide with the same tile size");
  o->slide = WsiSlide::open(r.slide);
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& e : open_)
    if (e.first == i) return e.second;
  open_.emplace_back(i, o);
  if (open_.size() > kOpenSlides) open_.erase(open_.begin());
  return o;
}

void SlideSource::read_instances(int64_t i, const int64_t* idx, int64_t n, float* dst) const {
  std::shared_ptr<const Open> o = slide(i);
  const int64_t N = static_cast<int64_t>(o->tiles.tiles.size()), row = 3 * crop_ * crop_;
  for (int64_t k = 0; k < n; ++k) {
    IPSNET_CHECK(idx[k] >= 0 && idx[k] < N, "tile ", idx[k], " of slide '", rows_[static_cast<size_t>(i)].name,
                 "' is outside [0, ", N, ")");
    read_tile(*o->slide, o->tiles, o->tiles.tiles[static_cast<size_t>(idx[k])], crop_, normalize_, dst + k * row);
    tiles_read_.fetch_add(1);
  }
}

void SlideSource::prefetch(int64_t i) const { slide(i); }

}  // namespace data
}  // namespace ipsnet

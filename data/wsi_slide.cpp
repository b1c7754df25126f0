// Whole-slide reading through OpenSlide (data/wsi_slide.h).
#include "data/wsi_slide.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "engine/common/error.h"

#ifdef IPSNET_HAVE_OPENSLIDE
#include <openslide.h>
#endif

namespace ipsnet {
namespace data {

#ifdef IPSNET_HAVE_OPENSLIDE

bool have_openslide() { return true; }

namespace {
openslide_t* os(void* p) { return static_cast<openslide_t*>(p); }

std::optional<double> parse_positive(const std::optional<std::string>& v) {
  if (!v) return std::nullopt;
  char* end = nullptr;
  double d = std::strtod(v->c_str(), &end);
  if (end == v->c_str() || !std::isfinite(d) || d <= 0) return std::nullopt;
  return d;
}
}  // namespace

std::unique_ptr<WsiSlide> WsiSlide::open(const std::string& path) {
  IPSNET_CHECK(std::filesystem::is_regular_file(path), "slide '", path, "' does not exist or is not a file");
  openslide_t* o = openslide_open(path.c_str());
  IPSNET_CHECK(o != nullptr, "OpenSlide does not recognise the format of the slide '", path,
               "' (supported: Aperio .svs, Hamamatsu .ndpi/.vms, MIRAX .mrxs, Philips/Ventana/Leica/generic tiled TIFF)");
  if (const char* err = openslide_get_error(o)) {
    std::string msg = err;
    openslide_close(o);
    IPSNET_FAIL("OpenSlide cannot open the slide '", path, "': ", msg);
  }
  std::unique_ptr<WsiSlide> s(new WsiSlide());
  s->path_ = path;
  s->osr_ = o;
  int32_t n = openslide_get_level_count(o);
  s->check_error("reading the level count");
  IPSNET_CHECK(n >= 1, "the slide '", path, "' has no levels");
  for (int32_t l = 0; l < n; ++l) {
    int64_t w = 0, h = 0;
    openslide_get_level_dimensions(o, l, &w, &h);
    s->dims_.push_back({w, h});
    s->downsamples_.push_back(openslide_get_level_downsample(o, l));
  }
  s->check_error("reading the level dimensions");
  return s;
}

WsiSlide::~WsiSlide() {
  if (osr_) openslide_close(os(osr_));
}

void WsiSlide::check_error(const char* what) const {
  if (const char* err = openslide_get_error(os(osr_))) IPSNET_FAIL("OpenSlide failed ", what, " of the slide '", path_, "': ", err);
}

int WsiSlide::best_level_for_downsample(double d) const {
  return openslide_get_best_level_for_downsample(os(osr_), d);
}

std::optional<std::string> WsiSlide::property(const std::string& name) const {
  const char* v = openslide_get_property_value(os(osr_), name.c_str());
  if (!v) return std::nullopt;
  return std::string(v);
}

std::vector<std::string> WsiSlide::property_names() const {
  std::vector<std::string> out;
  if (const char* const* names = openslide_get_property_names(os(osr_)))
    for (; *names; ++names) out.push_back(*names);
  return out;
}

std::optional<double> WsiSlide::mpp(char axis) const {
  if (auto v = parse_positive(property(str_cat("openslide.mpp-", axis)))) return v;
  // Generic TIFFs (and OpenSlide 3.4, which reads no mpp from them) state the
  // resolution in pixels per unit.
  auto res = parse_positive(property(axis == 'x' ? "tiff.XResolution" : "tiff.YResolution"));
  auto unit = property("tiff.ResolutionUnit");
  if (!res || !unit) return std::nullopt;
  if (*unit == "centimeter") return 1e4 / *res;
  if (*unit == "inch") return 25400.0 / *res;
  return std::nullopt;
}
std::optional<double> WsiSlide::mpp_x() const { return mpp('x'); }
std::optional<double> WsiSlide::mpp_y() const { return mpp('y'); }

void WsiSlide::read_region(int64_t x, int64_t y, int level, int64_t w, int64_t h, uint8_t* dst) const {
  IPSNET_CHECK(level >= 0 && level < level_count(), "level ", level, " of the slide '", path_, "' is outside [0, ",
               level_count(), ")");
  IPSNET_CHECK(w >= 0 && h >= 0, "region size ", w, "x", h, " is negative");
  // OpenSlide writes premultiplied ARGB; read in bands to bound the buffer.
  const int64_t band = std::max<int64_t>(1, std::min<int64_t>(h, (int64_t(16) << 20) / std::max<int64_t>(1, w)));
  std::vector<uint32_t> buf(static_cast<size_t>(w * band));
  const double ds = downsamples_[level];
  for (int64_t r0 = 0; r0 < h; r0 += band) {
    int64_t bh = std::min(band, h - r0);
    openslide_read_region(os(osr_), buf.data(), x, y + static_cast<int64_t>(std::llround(r0 * ds)), level, w, bh);
    check_error("reading a region");
    for (int64_t i = 0; i < w * bh; ++i) {
      uint32_t p = buf[i];
      uint32_t a = p >> 24, r = (p >> 16) & 0xff, g = (p >> 8) & 0xff, b = p & 0xff;
      uint8_t* q = dst + (r0 * w + i) * 3;
      if (a == 255) {
        q[0] = static_cast<uint8_t>(r), q[1] = static_cast<uint8_t>(g), q[2] = static_cast<uint8_t>(b);
      } else {
        // premultiplied colour over white: c + (255 - a)
        q[0] = static_cast<uint8_t>(std::min<uint32_t>(255, r + 255 - a));
        q[1] = static_cast<uint8_t>(std::min<uint32_t>(255, g + 255 - a));
        q[2] = static_cast<uint8_t>(std::min<uint32_t>(255, b + 255 - a));
      }
    }
  }
}

#else

bool have_openslide() { return false; }

std::unique_ptr<WsiSlide> WsiSlide::open(const std::string& path) {
  IPSNET_FAIL("cannot read the slide '", path, "': this ipsnet was built without OpenSlide (IPSNET_OPENSLIDE; "
              "apt-get install libopenslide-dev libtiff-dev and reconfigure)");
}
WsiSlide::~WsiSlide() = default;
void WsiSlide::check_error(const char*) const {}
int WsiSlide::best_level_for_downsample(double) const { return 0; }
std::optional<std::string> WsiSlide::property(const std::string&) const { return std::nullopt; }
std::vector<std::string> WsiSlide::property_names() const { return {}; }
std::optional<double> WsiSlide::mpp(char) const { return std::nullopt; }
std::optional<double> WsiSlide::mpp_x() const { return std::nullopt; }
std::optional<double> WsiSlide::mpp_y() const { return std::nullopt; }
void WsiSlide::read_region(int64_t, int64_t, int, int64_t, int64_t, uint8_t*) const {}

#endif

std::pair<int64_t, int64_t> WsiSlide::dimensions(int level) const {
  IPSNET_CHECK(level >= 0 && level < level_count(), "level ", level, " of the slide '", path_, "' is outside [0, ",
               level_count(), ")");
  return dims_[level];
}
double WsiSlide::downsample(int level) const {
  IPSNET_CHECK(level >= 0 && level < level_count(), "level ", level, " of the slide '", path_, "' is outside [0, ",
               level_count(), ")");
  return downsamples_[level];
}

}  // namespace data
}  // namespace ipsnet

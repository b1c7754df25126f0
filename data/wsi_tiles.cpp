// Tissue tiles of whole-slide images (data/wsi_tiles.h).
#include "data/wsi_tiles.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "data/binary_file.h"
#include "data/resize.h"
#include "data/wsi_slide.h"
#include "engine/common/error.h"
#include "engine/common/files.h"

namespace ipsnet {
namespace data {

// ---- the foreground rule -----------------------------------------------------

std::vector<uint8_t> foreground_gray(const uint8_t* rgb, int64_t n) {
  std::vector<uint8_t> g(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    double r = rgb[3 * i], gg = rgb[3 * i + 1], b = rgb[3 * i + 2];
    double v = r + b - (r + gg + b) / 1.5;
    v = std::min(255.0, std::max(0.0, v));
    g[i] = static_cast<uint8_t>(v);  // truncation, as NumPy's astype(uint8)
  }
  return g;
}

int otsu_threshold(const uint8_t* gray, int64_t n) {
  IPSNET_CHECK(n > 0, "Otsu's threshold of an empty image");
  int64_t hist[256] = {0};
  for (int64_t i = 0; i < n; ++i) ++hist[gray[i]];
  int lo = 0, hi = 255;
  while (hist[lo] == 0) ++lo;
  while (hist[hi] == 0) --hi;
  if (lo == hi) return lo;
  // scikit-image's threshold_otsu on the bins lo..hi: class weights and means
  // from both ends, between-class variance w1 * w2 * (m1 - m2)^2 at each cut.
  const int nb = hi - lo + 1;
  std::vector<int64_t> w1(nb), w2(nb), s1(nb), s2(nb);
  for (int k = 0; k < nb; ++k) {
    w1[k] = hist[lo + k] + (k ? w1[k - 1] : 0);
    s1[k] = hist[lo + k] * (lo + k) + (k ? s1[k - 1] : 0);
  }
  for (int k = nb - 1; k >= 0; --k) {
    w2[k] = hist[lo + k] + (k + 1 < nb ? w2[k + 1] : 0);
    s2[k] = hist[lo + k] * (lo + k) + (k + 1 < nb ? s2[k + 1] : 0);
  }
  int best = 0;
  double best_v = -1;
  for (int k = 0; k + 1 < nb; ++k) {
    double m1 = static_cast<double>(s1[k]) / static_cast<double>(w1[k]);
    double m2 = static_cast<double>(s2[k + 1]) / static_cast<double>(w2[k + 1]);
    double v = static_cast<double>(w1[k]) * static_cast<double>(w2[k + 1]) * (m1 - m2) * (m1 - m2);
    if (v > best_v) best_v = v, best = k;
  }
  return lo + best;
}

std::vector<uint8_t> foreground_mask(const uint8_t* gray, int64_t h, int64_t w, int t) {
  std::vector<uint8_t> mask(static_cast<size_t>(h * w), 0);
  const double low = 0.25 * t;
  std::deque<int64_t> queue;
  for (int64_t i = 0; i < h * w; ++i)
    if (gray[i] > t) {
      mask[i] = 1;
      queue.push_back(i);
    }
  // Grow through 4-connected pixels above the low threshold.
  while (!queue.empty()) {
    int64_t i = queue.front();
    queue.pop_front();
    int64_t y = i / w, x = i % w;
    const int64_t nb[4] = {x > 0 ? i - 1 : -1, x + 1 < w ? i + 1 : -1, y > 0 ? i - w : -1, y + 1 < h ? i + w : -1};
    for (int64_t j : nb)
      if (j >= 0 && !mask[j] && gray[j] > low) {
        mask[j] = 1;
        queue.push_back(j);
      }
  }
  return mask;
}

// ---- tiles -------------------------------------------------------------------

namespace {
// The foreground mask at one level, its image and its integral image.
struct ForegroundMask {
  int level = 0;
  int threshold = 0;
  int64_t w = 0, h = 0;
  double downsample = 1;
  std::vector<uint8_t> rgb;
  std::vector<int64_t> integral;  // (h + 1) x (w + 1)
  // Fraction of the mask pixels under a tile's footprint that are foreground.
  float fraction(int64_t x, int64_t y, double extent0) const {
    const double d = downsample;
    int64_t x0 = std::clamp<int64_t>(static_cast<int64_t>(std::floor(x / d)), 0, w);
    int64_t y0 = std::clamp<int64_t>(static_cast<int64_t>(std::floor(y / d)), 0, h);
    int64_t x1 = std::clamp<int64_t>(static_cast<int64_t>(std::ceil((x + extent0) / d)), 0, w);
    int64_t y1 = std::clamp<int64_t>(static_cast<int64_t>(std::ceil((y + extent0) / d)), 0, h);
    int64_t area = (x1 - x0) * (y1 - y0);
    int64_t fg = area > 0 ? integral[y1 * (w + 1) + x1] - integral[y0 * (w + 1) + x1] - integral[y1 * (w + 1) + x0] +
                                integral[y0 * (w + 1) + x0]
                          : 0;
    return area > 0 ? static_cast<float>(static_cast<double>(fg) / area) : 0.f;
  }
};

ForegroundMask foreground_at(const WsiSlide& slide, int mask_level) {
  const std::string& path = slide.path();
  // The mask level: the coarsest whose downsample is at most 32 by default.
  int ml = mask_level;
  if (ml < 0) {
    ml = 0;
    for (int l = 0; l < slide.level_count(); ++l)
      if (slide.downsample(l) <= 32.0 + 1e-6) ml = l;
  }
  IPSNET_CHECK(ml < slide.level_count(), "mask level ", ml, " is outside the ", slide.level_count(),
               " levels of the slide '", path, "'");
  ForegroundMask m;
  m.level = ml;
  const auto [mw, mh] = slide.dimensions(ml);
  const double dsm = slide.downsample(ml);
  std::vector<uint8_t> rgb(static_cast<size_t>(mw * mh * 3));
  slide.read_region(0, 0, ml, mw, mh, rgb.data());
  std::vector<uint8_t> gray = foreground_gray(rgb.data(), mw * mh);
  m.threshold = otsu_threshold(gray.data(), mw * mh);
  std::vector<uint8_t> mask = foreground_mask(gray.data(), mh, mw, m.threshold);
  std::vector<int64_t>& integral = m.integral;
  integral.assign(static_cast<size_t>((mw + 1) * (mh + 1)), 0);
  for (int64_t y = 0; y < mh; ++y)
    for (int64_t x = 0; x < mw; ++x)
      integral[(y + 1) * (mw + 1) + x + 1] = mask[y * mw + x] + integral[y * (mw + 1) + x + 1] +
                                             integral[(y + 1) * (mw + 1) + x] - integral[y * (mw + 1) + x];

  m.w = mw;
  m.h = mh;
  m.downsample = dsm;
  m.rgb = std::move(rgb);
  return m;
}

bool on_tumour(const std::vector<const Polygon*>& tumours, const Tile& tile, double extent0) {
  for (const Polygon* p : tumours)
    if (polygon_intersects_rect(*p, tile.x, tile.y, tile.x + extent0, tile.y + extent0)) return true;
  return false;
}
}  // namespace

SlideTiles cut_tiles(const WsiSlide& slide, const std::vector<Polygon>& polygons, const TileOptions& o,
                     std::vector<uint8_t>* mask_rgb, int64_t* mask_w, int64_t* mask_h) {
  const std::string& path = slide.path();
  IPSNET_CHECK(o.tile_size >= 1, "tile size ", o.tile_size, " must be positive");
  IPSNET_CHECK(o.min_foreground >= 0 && o.min_foreground <= 1, "minimum foreground ", o.min_foreground,
               " is outside [0, 1]");
  IPSNET_CHECK(o.level >= 0 && o.level < slide.level_count(), "tile level ", o.level, " is outside the ",
               slide.level_count(), " levels of the slide '", path, "'");
  SlideTiles t;
  t.slide_path = path;
  auto mpp = slide.mpp_x();
  t.mpp = mpp ? *mpp : 0.0;
  if (o.magnification > 0 || o.tile_um > 0) {
    IPSNET_CHECK(mpp.has_value(), "the slide '", path, "' states no microns per pixel (neither openslide.mpp-x nor "
                 "TIFF resolution tags), so a tile size in ",
                 o.magnification > 0 ? "magnification" : "micrometres", " cannot be converted; give --tile-size "
                 "at a --level instead");
  }
  if (o.magnification > 0) {
    double target_mpp = 10.0 / o.magnification;  // 10x = 1 um/px, 40x = 0.25 um/px
    double ds = target_mpp / *mpp;
    IPSNET_CHECK(ds >= 0.999, "magnification ", o.magnification, "x is finer than the slide '", path,
                 "' was scanned at (", 10.0 / *mpp, "x at level 0)");
    t.extent0 = o.tile_size * ds;
    t.level = slide.best_level_for_downsample(ds * 1.0001);
    t.out_size = o.tile_size;
  } else if (o.tile_um > 0) {
    t.extent0 = o.tile_um / *mpp;
    t.level = o.level;
    t.out_size = 0;
  } else {
    t.level = o.level;
    t.extent0 = o.tile_size * slide.downsample(o.level);
    t.out_size = o.tile_size;
  }
  t.read_size = std::llround(t.extent0 / slide.downsample(t.level));
  if (t.out_size == 0) t.out_size = t.read_size;
  IPSNET_CHECK(t.read_size >= 1, "tiles of ", t.extent0, " level-0 pixels are under one pixel at level ", t.level,
               " of the slide '", path, "'");
  const auto [w0, h0] = slide.dimensions(0);

  ForegroundMask m = foreground_at(slide, o.mask_level);
  t.mask_level = m.level;
  t.threshold = m.threshold;

  std::vector<const Polygon*> tumours;
  for (const Polygon& p : polygons)
    if (!p.exclusion() && p.x.size() >= 3) tumours.push_back(&p);

  const int64_t nx = static_cast<int64_t>(std::floor(w0 / t.extent0 + 1e-9));
  const int64_t ny = static_cast<int64_t>(std::floor(h0 / t.extent0 + 1e-9));
  for (int64_t j = 0; j < ny; ++j)
    for (int64_t i = 0; i < nx; ++i) {
      Tile tile;
      tile.x = std::llround(i * t.extent0);
      tile.y = std::llround(j * t.extent0);
      tile.foreground = m.fraction(tile.x, tile.y, t.extent0);
      tile.tumour = on_tumour(tumours, tile, t.extent0);
      if (tile.foreground >= o.min_foreground || tile.tumour) t.tiles.push_back(tile);
    }
  if (mask_rgb) {
    *mask_rgb = std::move(m.rgb);
    *mask_w = m.w;
    *mask_h = m.h;
  }
  return t;
}

SlideTiles tiles_from_coords(const WsiSlide& slide, const std::vector<Polygon>& polygons, const int64_t* xy,
                             int64_t n, int64_t level, int64_t size, int mask_level, const std::string& source,
                             std::vector<uint8_t>* mask_rgb, int64_t* mask_w, int64_t* mask_h) {
  const std::string& path = slide.path();
  IPSNET_CHECK(level >= 0 && level < slide.level_count(), source, ": patch_level ", level, " is not a level of the "
               "slide '", path, "' (it has ", slide.level_count(), " levels, 0 to ", slide.level_count() - 1, ")");
  IPSNET_CHECK(size >= 1, source, ": patch_size ", size, ", expected a positive number of pixels");
  SlideTiles t;
  t.slide_path = path;
  auto mpp = slide.mpp_x();
  t.mpp = mpp ? *mpp : 0.0;
  t.level = static_cast<int>(level);
  t.read_size = t.out_size = size;
  t.extent0 = static_cast<double>(size) * slide.downsample(t.level);
  const auto [w0, h0] = slide.dimensions(0);
  // A tile's top-left corner must lie on the slide; CLAM pads tiles at the
  // edge, and so does reading them (OpenSlide's transparent pixels, made white).
  for (int64_t i = 0; i < n; ++i)
    IPSNET_CHECK(xy[2 * i] >= 0 && xy[2 * i] < w0 && xy[2 * i + 1] >= 0 && xy[2 * i + 1] < h0, source,
                 ": coordinate ", i, " (", xy[2 * i], ", ", xy[2 * i + 1], ") is outside the slide '", path, "' (",
                 w0, " x ", h0, " level-0 pixels)");
  ForegroundMask m = foreground_at(slide, mask_level);
  t.mask_level = m.level;
  t.threshold = m.threshold;
  std::vector<const Polygon*> tumours;
  for (const Polygon& p : polygons)
    if (!p.exclusion() && p.x.size() >= 3) tumours.push_back(&p);
  t.tiles.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    Tile& tile = t.tiles[static_cast<size_t>(i)];
    tile.x = xy[2 * i];
    tile.y = xy[2 * i + 1];
    tile.foreground = m.fraction(tile.x, tile.y, t.extent0);
    tile.tumour = on_tumour(tumours, tile, t.extent0);
  }
  if (mask_rgb) {
    *mask_rgb = std::move(m.rgb);
    *mask_w = m.w;
    *mask_h = m.h;
  }
  return t;
}

namespace {
void put_px(std::vector<uint8_t>& img, int64_t w, int64_t h, int64_t x, int64_t y, const uint8_t c[3]) {
  if (x < 0 || y < 0 || x >= w || y >= h) return;
  std::copy_n(c, 3, &img[(y * w + x) * 3]);
}
void draw_line(std::vector<uint8_t>& img, int64_t w, int64_t h, double x0, double y0, double x1, double y1,
               const uint8_t c[3]) {
  int64_t n = static_cast<int64_t>(std::ceil(std::max(std::fabs(x1 - x0), std::fabs(y1 - y0)))) + 1;
  for (int64_t k = 0; k <= n; ++k) {
    double f = static_cast<double>(k) / n;
    put_px(img, w, h, std::llround(x0 + f * (x1 - x0)), std::llround(y0 + f * (y1 - y0)), c);
  }
}
}  // namespace

std::vector<uint8_t> tile_thumbnail(const std::vector<uint8_t>& rgb, int64_t w, int64_t h, double downsample,
                                    const SlideTiles& t, const std::vector<Polygon>& polygons, int64_t max_side,
                                    int64_t* out_w, int64_t* out_h) {
  // Box-reduce by an integer factor so the larger side fits max_side.
  int64_t k = std::max<int64_t>(1, (std::max(w, h) + max_side - 1) / max_side);
  int64_t tw = std::max<int64_t>(1, w / k), th = std::max<int64_t>(1, h / k);
  std::vector<uint8_t> img(static_cast<size_t>(tw * th * 3));
  for (int64_t y = 0; y < th; ++y)
    for (int64_t x = 0; x < tw; ++x)
      for (int c = 0; c < 3; ++c) {
        int64_t s = 0, n = 0;
        for (int64_t dy = 0; dy < k && y * k + dy < h; ++dy)
          for (int64_t dx = 0; dx < k && x * k + dx < w; ++dx, ++n) s += rgb[((y * k + dy) * w + x * k + dx) * 3 + c];
        img[(y * tw + x) * 3 + c] = static_cast<uint8_t>(n ? s / n : 255);
      }
  const double f = 1.0 / (downsample * k);  // level-0 pixels -> thumbnail pixels
  const uint8_t green[3] = {0, 160, 0}, red[3] = {220, 0, 0}, blue[3] = {0, 60, 255};
  for (const Tile& tile : t.tiles) {
    double x0 = tile.x * f, y0 = tile.y * f, x1 = (tile.x + t.extent0) * f - 1, y1 = (tile.y + t.extent0) * f - 1;
    const uint8_t* c = tile.tumour ? red : green;
    draw_line(img, tw, th, x0, y0, x1, y0, c);
    draw_line(img, tw, th, x1, y0, x1, y1, c);
    draw_line(img, tw, th, x1, y1, x0, y1, c);
    draw_line(img, tw, th, x0, y1, x0, y0, c);
  }
  for (const Polygon& p : polygons)
    for (size_t i = 0, j = p.x.size() - 1; i < p.x.size(); j = i++)
      draw_line(img, tw, th, p.x[j] * f, p.y[j] * f, p.x[i] * f, p.y[i] * f, blue);
  *out_w = tw;
  *out_h = th;
  return img;
}

// ---- the tile file -------------------------------------------------------------

namespace {
constexpr char kTilesMagic[8] = {'I', 'P', 'S', 'T', 'I', 'L', 'E', 'S'};
constexpr uint32_t kTilesVersion = 1;
constexpr size_t kTilesHeader = 80, kTileRecord = 24;
}  // namespace

void write_tiles_file(const std::string& path, const SlideTiles& t) {
  const size_t n = t.tiles.size();
  std::vector<uint8_t> b(kTilesHeader + t.slide_path.size() + t.name.size() + n * kTileRecord + 4, 0);
  std::copy_n(kTilesMagic, 8, b.data());
  put<uint32_t>(b.data(), 8, kTilesVersion);
  put<int32_t>(b.data(), 12, t.level);
  put<int64_t>(b.data(), 16, t.read_size);
  put<int64_t>(b.data(), 24, t.out_size);
  put<double>(b.data(), 32, t.extent0);
  put<double>(b.data(), 40, t.mpp);
  put<int64_t>(b.data(), 48, t.label);
  put<int32_t>(b.data(), 56, t.mask_level);
  put<int32_t>(b.data(), 60, t.threshold);
  put<int64_t>(b.data(), 64, static_cast<int64_t>(n));
  put<uint32_t>(b.data(), 72, static_cast<uint32_t>(t.slide_path.size()));
  put<uint32_t>(b.data(), 76, static_cast<uint32_t>(t.name.size()));
  size_t off = kTilesHeader;
  std::copy(t.slide_path.begin(), t.slide_path.end(), b.begin() + off);
  off += t.slide_path.size();
  std::copy(t.name.begin(), t.name.end(), b.begin() + off);
  off += t.name.size();
  for (const Tile& tile : t.tiles) {
    put<int64_t>(b.data(), off, tile.x);
    put<int64_t>(b.data(), off + 8, tile.y);
    put<float>(b.data(), off + 16, tile.foreground);
    b[off + 20] = tile.tumour ? 1 : 0;
    off += kTileRecord;
  }
  put<uint32_t>(b.data(), off, crc32_of(b.data(), off));
  write_file_atomic(path, std::string(reinterpret_cast<const char*>(b.data()), b.size()));
}

SlideTiles read_tiles_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  IPSNET_CHECK(in.good(), "cannot open the tile file '", path, "'");
  std::vector<uint8_t> b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  IPSNET_CHECK(b.size() >= kTilesHeader + 4 && std::equal(kTilesMagic, kTilesMagic + 8, b.begin()), "'", path,
               "' is not an ipsnet tile file (`ipsnet wsi-tiles` writes them)");
  IPSNET_CHECK(get<uint32_t>(b.data(), 8) == kTilesVersion, "the tile file '", path, "' has version ",
               get<uint32_t>(b.data(), 8), ", expected ", kTilesVersion);
  SlideTiles t;
  t.level = get<int32_t>(b.data(), 12);
  t.read_size = get<int64_t>(b.data(), 16);
  t.out_size = get<int64_t>(b.data(), 24);
  t.extent0 = get<double>(b.data(), 32);
  t.mpp = get<double>(b.data(), 40);
  t.label = get<int64_t>(b.data(), 48);
  t.mask_level = get<int32_t>(b.data(), 56);
  t.threshold = get<int32_t>(b.data(), 60);
  const int64_t n = get<int64_t>(b.data(), 64);
  const size_t lp = get<uint32_t>(b.data(), 72), ln = get<uint32_t>(b.data(), 76);
  IPSNET_CHECK(n >= 0 && static_cast<uint64_t>(n) < (uint64_t(1) << 40) &&
                   b.size() == kTilesHeader + lp + ln + static_cast<size_t>(n) * kTileRecord + 4,
               "the tile file '", path, "' is truncated or damaged (", b.size(), " bytes for ", n, " tiles)");
  const size_t end = b.size() - 4;
  IPSNET_CHECK(crc32_of(b.data(), end) == get<uint32_t>(b.data(), end), "the tile file '", path,
               "' fails its checksum (damaged)");
  size_t off = kTilesHeader;
  t.slide_path.assign(reinterpret_cast<const char*>(&b[off]), lp);
  off += lp;
  t.name.assign(reinterpret_cast<const char*>(&b[off]), ln);
  off += ln;
  t.tiles.resize(static_cast<size_t>(n));
  for (Tile& tile : t.tiles) {
    tile.x = get<int64_t>(b.data(), off);
    tile.y = get<int64_t>(b.data(), off + 8);
    tile.foreground = get<float>(b.data(), off + 16);
    tile.tumour = b[off + 20] != 0;
    off += kTileRecord;
  }
  return t;
}

void read_tile(const WsiSlide& slide, const SlideTiles& t, const Tile& tile, int64_t crop,
               const std::string& normalize, float* dst) {
  const int64_t r = t.read_size, s = t.out_size, c = crop > 0 ? crop : s;
  IPSNET_CHECK(c <= s, "centre crop ", c, " is larger than the tiles (", s, " px) of '", t.slide_path, "'");
  IPSNET_CHECK(normalize == "none" || normalize == "imagenet", "normalize '", normalize,
               "' is not one of none, imagenet");
  std::vector<uint8_t> rgb(static_cast<size_t>(r * r * 3));
  slide.read_region(tile.x, tile.y, t.level, r, r, rgb.data());
  // Planes in [0, 1] at the read size, then resized to out_size when needed.
  std::vector<float> planes(static_cast<size_t>(3 * s * s));
  std::vector<float> plane(static_cast<size_t>(r * r));
  for (int ch = 0; ch < 3; ++ch) {
    for (int64_t i = 0; i < r * r; ++i) plane[i] = rgb[i * 3 + ch] * (1.0f / 255.0f);
    if (r == s) std::copy(plane.begin(), plane.end(), planes.begin() + ch * s * s);
    else resize_bilinear(plane.data(), r, r, planes.data() + ch * s * s, s, s);
  }
  // torchvision's CenterCrop: offset int(round((s - c) / 2)) (round half to even).
  const int64_t off = static_cast<int64_t>(std::nearbyint((s - c) / 2.0));
  static const float kMean[3] = {0.485f, 0.456f, 0.406f}, kStd[3] = {0.229f, 0.224f, 0.225f};
  const bool in = normalize == "imagenet";
  for (int ch = 0; ch < 3; ++ch)
    for (int64_t y = 0; y < c; ++y)
      for (int64_t x = 0; x < c; ++x) {
        float v = planes[(ch * s + y + off) * s + x + off];
        dst[(ch * c + y) * c + x] = in ? (v - kMean[ch]) / kStd[ch] : v;
      }
}

// ---- slide lists -----------------------------------------------------------------

bool is_slide_file(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const char* e : {".tif", ".tiff", ".svs", ".ndpi", ".vms", ".vmu", ".mrxs", ".scn", ".bif", ".svslide"})
    if (ext == e) return true;
  return false;
}

namespace {
namespace fs = std::filesystem;

std::vector<std::string> slides_in(const std::string& dir) {
  std::vector<std::string> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && is_slide_file(e.path().string())) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

struct CsvLabel {
  int64_t label;
  std::string split;
};

std::map<std::string, CsvLabel> read_labels_csv(const std::string& path) {
  std::ifstream in(path);
  IPSNET_CHECK(in.good(), "cannot open the labels file '", path, "'");
  std::map<std::string, CsvLabel> out;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string cell; std::getline(ss, cell, ',');) f.push_back(trim(cell));
    IPSNET_CHECK(f.size() == 2 || f.size() == 3, path, ":", lineno, ": expected `slide,label[,split]`, got '", line,
                 "'");
    std::string lab = f[1];
    std::transform(lab.begin(), lab.end(), lab.begin(), [](unsigned char c) { return std::tolower(c); });
    int64_t label;
    if (lab == "1" || lab == "tumor" || lab == "tumour") label = 1;
    else if (lab == "0" || lab == "normal") label = 0;
    else if (out.empty() && lab == "label") continue;  // a header row
    else IPSNET_FAIL(path, ":", lineno, ": label '", f[1], "' is not one of 0, 1, normal, tumor");
    std::string split = f.size() == 3 ? f[2] : "";
    IPSNET_CHECK(split.empty() || split == "train" || split == "test", path, ":", lineno, ": split '", split,
                 "' is not train or test");
    out[fs::path(f[0]).stem().string()] = {label, split};
  }
  return out;
}
}  // namespace

std::vector<SlideEntry> find_slides(const std::string& input, const std::string& labels_csv,
                                    const std::string& annotations_dir) {
  std::vector<SlideEntry> out;
  auto add = [&](const std::string& path, const std::string& split, const std::string& ann_dir) {
    SlideEntry e;
    e.path = path;
    e.name = fs::path(path).stem().string();
    e.split = split;
    if (!ann_dir.empty()) {
      std::string xml = ann_dir + "/" + e.name + ".xml";
      if (fs::is_regular_file(xml)) e.annotation = xml;
    }
    out.push_back(e);
  };
  const bool camelyon = fs::is_directory(input + "/training") || fs::is_directory(input + "/testing");
  if (fs::is_regular_file(input)) {
    IPSNET_CHECK(is_slide_file(input), "'", input, "' is not a slide file OpenSlide reads (.tif, .svs, .ndpi, ...)");
    add(input, "", annotations_dir);
  } else if (camelyon) {
    // CAMELYON16: positive exactly when the slide has an annotation file.
    for (const char* sub : {"/training/normal", "/training/tumor"})
      for (const auto& p : slides_in(input + sub))
        add(p, "train", annotations_dir.empty() ? input + "/training/lesion_annotations" : annotations_dir);
    for (const auto& p : slides_in(input + "/testing/images"))
      add(p, "test", annotations_dir.empty() ? input + "/testing/lesion_annotations" : annotations_dir);
    for (SlideEntry& e : out) e.label = e.annotation.empty() ? 0 : 1;
  } else {
    IPSNET_CHECK(fs::is_directory(input), "'", input, "' is neither a slide file nor a directory");
    for (const auto& p : slides_in(input)) add(p, "", annotations_dir);
  }
  if (!labels_csv.empty()) {
    auto labels = read_labels_csv(labels_csv);
    std::map<std::string, bool> present;
    for (SlideEntry& e : out) {
      auto it = labels.find(e.name);
      if (it == labels.end()) continue;
      present[e.name] = true;
      e.label = it->second.label;
      if (!it->second.split.empty()) e.split = it->second.split;
    }
    for (const auto& kv : labels)
      IPSNET_CHECK(present.count(kv.first), "the labels file '", labels_csv, "' names the slide '", kv.first,
                   "', which is not in '", input, "'");
    if (!camelyon) {  // only the listed slides
      out.erase(std::remove_if(out.begin(), out.end(), [&](const SlideEntry& e) { return !present.count(e.name); }),
                out.end());
    }
  }
  IPSNET_CHECK(!out.empty(), "no slides found in '", input, "' (expected slide files or the CAMELYON16 layout)");
  return out;
}

}  // namespace data
}  // namespace ipsnet

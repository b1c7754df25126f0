#include "data/photo_source.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <numeric>

#include "engine/backend/geometry.h"
#include "engine/common/error.h"
#include "engine/random/generator.h"

namespace ipsnet {
namespace data {

PhotoSource::PhotoSource(PhotoReader reader, const SourceOptions& o) : reader_(std::move(reader)) {
  int64_t size = o.patch_size;
  if (size <= 0 && reader_.size() > 0) {
    // Without a patch size, one patch of the smaller side: images must agree.
    const PhotoEntry& e0 = reader_.entry(0);
    for (int64_t i = 1; i < reader_.size(); ++i)
      IPSNET_CHECK(reader_.entry(i).height == e0.height && reader_.entry(i).width == e0.width,
                   "photographs of different sizes (", reader_.name(0), " is ", e0.height, "x", e0.width, ", ",
                   reader_.name(i), " is ", reader_.entry(i).height, "x", reader_.entry(i).width,
                   ") need a patch_size");
    size = std::min(e0.height, e0.width);
  }
  patch_h_ = patch_w_ = size;
  stride_h_ = stride_w_ = o.patch_stride > 0 ? o.patch_stride : size;
  for (int64_t i = 0; i < reader_.size(); ++i) {
    const PhotoEntry& e = reader_.entry(i);
    IPSNET_CHECK(e.height >= patch_h_ && e.width >= patch_w_, reader_.name(i), " is ", e.height, "x", e.width,
                 ", smaller than a ", patch_h_, "x", patch_w_, " patch");
  }
  if (o.normalize == "imagenet") {
    IPSNET_CHECK(reader_.channels() == 3, "normalize: imagenet needs RGB photographs; '", reader_.path(),
                 "' holds grayscale ones");
    mean_ = {{kImagenetMean[0], kImagenetMean[1], kImagenetMean[2]}};
    std_ = {{kImagenetStd[0], kImagenetStd[1], kImagenetStd[2]}};  // divided by (as torchvision's Normalize), not multiplied
  } else {
    IPSNET_CHECK(o.normalize == "none" || o.normalize.empty(), "normalize: '", o.normalize,
                 "' is not known (none | imagenet)");
  }
  IPSNET_CHECK(o.jitter >= 0 && o.jitter <= 0.5, "colour jitter strength ", o.jitter, " outside [0, 0.5]");
  IPSNET_CHECK(o.translate >= 0, "translation ", o.translate, " must be >= 0");
  jitter_ = o.jitter;
  translate_ = o.translate;
  augment_seed_ = o.augment_seed;
  gray_means_.reset(new std::atomic<float>[static_cast<size_t>(std::max<int64_t>(1, reader_.size()))]);
  for (int64_t i = 0; i < reader_.size(); ++i) gray_means_[static_cast<size_t>(i)].store(std::nanf(""));
}

PhotoSource::Augment PhotoSource::augment(int64_t i) const {
  Augment a;
  if (!augmenting()) return a;
  // One stream per (epoch, image): the same draw whichever thread or call asks.
  Generator g(augment_seed_, (static_cast<uint64_t>(epoch_.load()) << 32) ^ static_cast<uint64_t>(i));
  if (jitter_ > 0) {
    // torchvision's ColorJitter.get_params: a random order, then the factors.
    const std::vector<int64_t> perm = g.permutation(4);
    for (int k = 0; k < 4; ++k) a.order[k] = static_cast<int>(perm[static_cast<size_t>(k)]);
    const double j = jitter_;
    a.brightness = static_cast<float>(g.uniform(std::max(0.0, 1 - j), 1 + j));
    a.contrast = static_cast<float>(g.uniform(std::max(0.0, 1 - j), 1 + j));
    a.saturation = static_cast<float>(g.uniform(std::max(0.0, 1 - j), 1 + j));
    a.hue = static_cast<float>(g.uniform(-j, j));
    a.jitter = true;
  }
  if (translate_ > 0) {
    a.ty = g.randint(-translate_, translate_ + 1);
    a.tx = g.randint(-translate_, translate_ + 1);
  }
  return a;
}

float PhotoSource::gray_mean(int64_t i) const {
  float m = gray_means_[static_cast<size_t>(i)].load();
  if (!std::isnan(m)) return m;
  size_t n = 0;
  const uint8_t* p = reader_.bytes(i, &n);
  const int64_t C = reader_.channels();
  std::unique_ptr<RowDecoder> d = RowDecoder::open(p, n, static_cast<int>(C), reader_.name(i));
  std::vector<uint8_t> row(static_cast<size_t>(d->width() * C));
  double sum = 0;
  for (int64_t y = 0; y < d->height(); ++y) {
    d->read(row.data());
    for (int64_t x = 0; x < d->width(); ++x) {
      const uint8_t* q = &row[static_cast<size_t>(x * C)];
      sum += C == 3 ? 0.2989 * (q[0] / 255.0) + 0.587 * (q[1] / 255.0) + 0.114 * (q[2] / 255.0) : q[0] / 255.0;
    }
  }
  m = static_cast<float>(sum / (static_cast<double>(d->height()) * d->width()));
  gray_means_[static_cast<size_t>(i)].store(m);
  return m;
}

namespace {
inline float clamp01(float v) { return v < 0.f ? 0.f : v > 1.f ? 1.f : v; }

// torchvision's _rgb2hsv, hue shift modulo 1, _hsv2rgb (float).
void shift_hue(float* v, float hue) {
  const float r = v[0], g = v[1], b = v[2];
  const float maxc = std::max(r, std::max(g, b)), minc = std::min(r, std::min(g, b));
  const bool eqc = maxc == minc;
  const float cr = maxc - minc;
  const float s = cr / (eqc ? 1.f : maxc);
  const float div = eqc ? 1.f : cr;
  const float rc = (maxc - r) / div, gc = (maxc - g) / div, bc = (maxc - b) / div;
  float h = 0;
  if (maxc == r)
    h = bc - gc;
  else if (maxc == g)
    h = 2.f + rc - bc;
  else
    h = 4.f + gc - rc;
  h = std::fmod(h / 6.f + 1.f, 1.f);
  h = h + hue;
  h = h - std::floor(h);  // Python's % 1.0
  const float val = maxc;
  const float fi = std::floor(h * 6.f), f = h * 6.f - fi;
  const int i = ((static_cast<int>(fi) % 6) + 6) % 6;
  const float p = clamp01(val * (1.f - s)), q = clamp01(val * (1.f - s * f)), t = clamp01(val * (1.f - s * (1.f - f)));
  static const int kSel[6][3] = {{0, 3, 1}, {2, 0, 1}, {1, 0, 3}, {1, 2, 0}, {3, 1, 0}, {0, 1, 2}};
  const float opts[4] = {val, p, q, t};  // 0 v, 1 p, 2 q, 3 t
  for (int c = 0; c < 3; ++c) v[c] = opts[kSel[i][c]];
}
}  // namespace

void PhotoSource::convert_jitter(const uint8_t* src, int64_t count, float* dst, int64_t plane, const Augment& a,
                                 float mean) const {
  const int64_t C = reader_.channels();
  for (int64_t k = 0; k < count; ++k) {
    float v[3];
    for (int64_t c = 0; c < C; ++c) v[c] = static_cast<float>(src[k * C + c]) / 255.0f;
    for (int o : a.order) {
      if (o == 0) {
        for (int64_t c = 0; c < C; ++c) v[c] = clamp01(v[c] * a.brightness);
      } else if (o == 1) {
        for (int64_t c = 0; c < C; ++c) v[c] = clamp01(a.contrast * v[c] + (1 - a.contrast) * mean);
      } else if (o == 2 && C == 3) {
        const float gray = 0.2989f * v[0] + 0.587f * v[1] + 0.114f * v[2];
        for (int c = 0; c < 3; ++c) v[c] = clamp01(a.saturation * v[c] + (1 - a.saturation) * gray);
      } else if (o == 3 && C == 3) {
        shift_hue(v, a.hue);
      }
    }
    for (int64_t c = 0; c < C; ++c)
      dst[c * plane + k] = (v[c] - mean_[static_cast<size_t>(c)]) / std_[static_cast<size_t>(c)];
  }
}

bool PhotoSource::detect(const std::string& dir) { return is_photo_dataset(dir); }

std::unique_ptr<DataSource> PhotoSource::open(const std::string& dir, const std::string& split,
                                              const SourceOptions& options) {
  return std::make_unique<PhotoSource>(PhotoReader::open(dir, split), options);
}

std::string PhotoSource::describe() const {
  std::string size = "no";
  if (reader_.size() > 0) {
    const PhotoEntry& e = reader_.entry(0);
    size = str_cat(e.height, "x", e.width, " (first)");
  }
  return str_cat(reader_.size(), " ", reader_.channels() == 3 ? "RGB" : "grayscale", " photographs, ", size,
                 ", patches of ", patch_h_, "x", patch_w_, " stride ", stride_h_,
                 reader_.size() > 0 ? str_cat(", N = ", grid(0).count(), " (first)") : std::string());
}

std::vector<LabelSpec> PhotoSource::labels() const {
  std::vector<LabelSpec> out;
  for (const PhotoTask& t : reader_.tasks())
    out.push_back({t.name, static_cast<int64_t>(t.classes.size()), false});
  return out;
}

std::vector<int64_t> PhotoSource::classes(int64_t i, const std::string& name) const {
  const auto& tasks = reader_.tasks();
  for (size_t t = 0; t < tasks.size(); ++t)
    if (tasks[t].name == name) return {reader_.entry(i).labels[t]};
  std::string names;
  for (const PhotoTask& t : tasks) names += (names.empty() ? "" : ", ") + t.name;
  IPSNET_FAIL("the photographs in '", reader_.path(), "' have the labels ", names, ", not '", name, "'");
}

PatchGrid PhotoSource::grid(int64_t i) const {
  const PhotoEntry& e = reader_.entry(i);
  return make_patch_grid(e.height, e.width, patch_h_, patch_w_, stride_h_, stride_w_);
}

void PhotoSource::convert(const uint8_t* src, int64_t count, float* dst, int64_t plane) const {
  const int64_t C = reader_.channels();
  for (int64_t c = 0; c < C; ++c) {
    const float m = mean_[static_cast<size_t>(c)], s = std_[static_cast<size_t>(c)];
    float* d = dst + c * plane;
    for (int64_t k = 0; k < count; ++k) d[k] = (static_cast<float>(src[k * C + c]) / 255.0f - m) / s;
  }
}

void PhotoSource::read_image(int64_t i, float* dst) const {
  if (!augmenting()) return read_image_plain(i, dst);
  const Augment a = augment(i);
  const PhotoEntry& e = reader_.entry(i);
  const int64_t C = reader_.channels(), H = e.height, W = e.width, plane = H * W;
  for (int64_t c = 0; c < C; ++c)
    std::fill(dst + c * plane, dst + (c + 1) * plane, (0.0f - mean_[static_cast<size_t>(c)]) / std_[static_cast<size_t>(c)]);
  float m = 0;
  if (a.jitter) {
    m = gray_mean(i);
    for (int o : a.order) {
      if (o == 0) m *= a.brightness;  // brightness before contrast scales the mean
      if (o == 1) break;
    }
  }
  size_t n = 0;
  const uint8_t* p = reader_.bytes(i, &n);
  std::unique_ptr<RowDecoder> d = RowDecoder::open(p, n, static_cast<int>(C), reader_.name(i));
  std::vector<uint8_t> row(static_cast<size_t>(W * C));
  const int64_t sx0 = std::max<int64_t>(0, -a.tx), sx1 = std::min<int64_t>(W, W - a.tx);
  for (int64_t sy = 0; sy < H; ++sy) {
    const int64_t y = sy + a.ty;
    if (y < 0) {
      d->skip(1);
      continue;
    }
    if (y >= H || sx1 <= sx0) break;
    d->read(row.data());
    float* out = dst + y * W + sx0 + a.tx;
    if (a.jitter)
      convert_jitter(row.data() + sx0 * C, sx1 - sx0, out, plane, a, m);
    else
      convert(row.data() + sx0 * C, sx1 - sx0, out, plane);
  }
}

void PhotoSource::read_image_plain(int64_t i, float* dst) const {
  size_t n = 0;
  const uint8_t* p = reader_.bytes(i, &n);
  const std::string name = reader_.name(i);
  std::unique_ptr<RowDecoder> d = RowDecoder::open(p, n, reader_.channels(), name);
  const PhotoEntry& e = reader_.entry(i);
  IPSNET_CHECK(d->height() == e.height && d->width() == e.width, name, ": decodes to ", d->height(), "x",
               d->width(), ", the index says ", e.height, "x", e.width);
  std::vector<uint8_t> row(static_cast<size_t>(d->width() * reader_.channels()));
  const int64_t plane = e.height * e.width;
  for (int64_t y = 0; y < e.height; ++y) {
    d->read(row.data());
    convert(row.data(), e.width, dst + y * e.width, plane);
  }
}

// A decoder part-way down an image, with the ring of the rows it read last.
struct PhotoSource::Cursor {
  int64_t image = -1;
  std::unique_ptr<RowDecoder> dec;
  std::vector<uint8_t> ring;  // (ph, row_width, C): row r in slot r % ph
  int64_t valid_from = 0;     // rows [valid_from, dec->next_row()) are in the ring
};

PhotoSource::~PhotoSource() = default;

std::unique_ptr<PhotoSource::Cursor> PhotoSource::take_cursor(int64_t i, int64_t first_row, int64_t c0,
                                                                int64_t c1) const {
  std::lock_guard<std::mutex> lk(cursor_mu_);
  for (size_t k = 0; k < cursors_.size(); ++k) {
    Cursor& c = *cursors_[k];
    if (c.image == i && first_row >= c.valid_from && c.dec->col0() <= c0 && c.dec->col0() + c.dec->row_width() >= c1) {
      std::unique_ptr<Cursor> out = std::move(cursors_[k]);
      cursors_.erase(cursors_.begin() + static_cast<long>(k));
      return out;
    }
  }
  return nullptr;
}

void PhotoSource::return_cursor(std::unique_ptr<Cursor> c) const {
  if (c->dec->next_row() >= c->dec->height()) return;  // finished: nothing to continue
  std::lock_guard<std::mutex> lk(cursor_mu_);
  cursors_.insert(cursors_.begin(), std::move(c));  // most recent first
  if (cursors_.size() > static_cast<size_t>(kMaxCursors)) cursors_.pop_back();
}

void PhotoSource::read_instances(int64_t i, const int64_t* idx, int64_t n, float* dst) const {
  if (n <= 0) return;
  const PatchGrid g = grid(i);
  const int64_t C = reader_.channels(), ph = g.patch_h, pw = g.patch_w, count = g.count(), plane = ph * pw;
  for (int64_t k = 0; k < n; ++k)
    IPSNET_CHECK(idx[k] >= 0 && idx[k] < count, "patch ", idx[k], " of image ", i, " outside its ", count);
  const Augment a = augment(i);
  float m = 0;  // the contrast mean (jitter)
  if (a.jitter) {
    m = gray_mean(i);
    for (int o : a.order) {
      if (o == 0) m *= a.brightness;
      if (o == 1) break;
    }
  }
  // Patch k shows the source region at (row0 - ty, col0 - tx); what falls
  // outside the image is the fill (0 before normalisation).
  struct Span {
    int64_t sy0, sx0, ry0, ry1, cx0, cx1;  // source origin; rows [ry0, ry1), columns [cx0, cx1) inside the image
  };
  std::vector<Span> span(static_cast<size_t>(n));
  std::vector<int64_t> order;
  int64_t c0 = g.width, c1 = 0;
  for (int64_t k = 0; k < n; ++k) {
    Span& sp = span[static_cast<size_t>(k)];
    sp.sy0 = g.row0(idx[k]) - a.ty;
    sp.sx0 = g.col0(idx[k]) - a.tx;
    sp.ry0 = std::max<int64_t>(0, sp.sy0);
    sp.ry1 = std::min<int64_t>(g.height, sp.sy0 + ph);
    sp.cx0 = std::max<int64_t>(0, sp.sx0);
    sp.cx1 = std::min<int64_t>(g.width, sp.sx0 + pw);
    float* out = dst + k * C * plane;
    if (sp.ry0 >= sp.ry1 || sp.cx0 >= sp.cx1 || a.ty != 0 || a.tx != 0)
      for (int64_t c = 0; c < C; ++c)
        std::fill(out + c * plane, out + (c + 1) * plane,
                  (0.0f - mean_[static_cast<size_t>(c)]) / std_[static_cast<size_t>(c)]);
    if (sp.ry0 >= sp.ry1 || sp.cx0 >= sp.cx1) continue;  // wholly outside: all fill
    order.push_back(k);
    c0 = std::min(c0, sp.cx0);
    c1 = std::max(c1, sp.cx1);
  }
  if (order.empty()) return;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t x, int64_t y) { return span[static_cast<size_t>(x)].ry0 < span[static_cast<size_t>(y)].ry0; });
  // Continue a decoder left above these rows by an earlier call (the
  // selection reads an image's patches chunk by chunk, top to bottom), else
  // open one.
  std::unique_ptr<Cursor> cur = take_cursor(i, span[static_cast<size_t>(order[0])].ry0, c0, c1);
  if (!cur) {
    size_t nbytes = 0;
    const uint8_t* p = reader_.bytes(i, &nbytes);
    cur = std::make_unique<Cursor>();
    cur->image = i;
    // Full-width rows for a request that spans most of the width (it is likely
    // one of a sequence that a cursor can then serve); cropped otherwise.
    const bool wide = (c1 - c0) * 2 > g.width;
    cur->dec = RowDecoder::open(p, nbytes, static_cast<int>(C), reader_.name(i), wide ? 0 : c0, wide ? -1 : c1);
    IPSNET_CHECK(cur->dec->height() == g.height && cur->dec->width() == g.width, reader_.name(i), ": decodes to ",
                 cur->dec->height(), "x", cur->dec->width(), ", the index says ", g.height, "x", g.width);
    cur->ring.resize(static_cast<size_t>(ph * cur->dec->row_width() * C));
    decoders_opened_.fetch_add(1);
    int64_t peak = peak_band_.load();
    const int64_t b = static_cast<int64_t>(cur->ring.size());
    while (b > peak && !peak_band_.compare_exchange_weak(peak, b)) {
    }
  }
  RowDecoder& d = *cur->dec;
  const int64_t row_bytes = d.row_width() * C;
  uint8_t* ring = cur->ring.data();
  for (int64_t k : order) {
    const Span& sp = span[static_cast<size_t>(k)];
    // Rows above that no pending patch needs are skipped (no IDCT for JPEG).
    if (d.next_row() < sp.ry0) {
      d.skip(sp.ry0 - d.next_row());
      cur->valid_from = d.next_row();
    }
    while (d.next_row() < sp.ry1) {
      d.read(ring + (d.next_row() % ph) * row_bytes);  // read() advances next_row()
      cur->valid_from = std::max(cur->valid_from, d.next_row() - ph);
    }
    float* out = dst + k * C * plane;
    for (int64_t sy = sp.ry0; sy < sp.ry1; ++sy) {
      const uint8_t* src = ring + (sy % ph) * row_bytes + (sp.cx0 - d.col0()) * C;
      float* o = out + (sy - sp.sy0) * pw + (sp.cx0 - sp.sx0);
      if (a.jitter)
        convert_jitter(src, sp.cx1 - sp.cx0, o, plane, a, m);
      else
        convert(src, sp.cx1 - sp.cx0, o, plane);
    }
  }
  return_cursor(std::move(cur));
}

}  // namespace data
}  // namespace ipsnet

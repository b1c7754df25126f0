#include "data/photo_source.h"

#include <algorithm>
#include <mutex>
#include <numeric>

#include "engine/backend/geometry.h"
#include "engine/common/error.h"

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
    mean_ = {{0.485f, 0.456f, 0.406f}};
    std_ = {{0.229f, 0.224f, 0.225f}};  // divided by (as torchvision's Normalize), not multiplied
  } else {
    IPSNET_CHECK(o.normalize == "none" || o.normalize.empty(), "normalize: '", o.normalize,
                 "' is not known (none | imagenet)");
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
  const int64_t C = reader_.channels(), ph = g.patch_h, pw = g.patch_w, count = g.count();
  for (int64_t k = 0; k < n; ++k)
    IPSNET_CHECK(idx[k] >= 0 && idx[k] < count, "patch ", idx[k], " of image ", i, " outside its ", count);
  // Patches in row order; the columns any of them covers.
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return g.row0(idx[a]) < g.row0(idx[b]); });
  int64_t c0 = g.width, c1 = 0;
  for (int64_t k = 0; k < n; ++k) {
    c0 = std::min(c0, g.col0(idx[k]));
    c1 = std::max(c1, g.col0(idx[k]) + pw);
  }
  // Continue a decoder left above these rows by an earlier call (the
  // selection reads an image's patches chunk by chunk, top to bottom), else
  // open one.
  std::unique_ptr<Cursor> cur = take_cursor(i, g.row0(idx[order[0]]), c0, c1);
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
  const int64_t row_bytes = d.row_width() * C, plane = ph * pw;
  uint8_t* ring = cur->ring.data();
  for (size_t next = 0; next < order.size(); ++next) {
    const int64_t k = order[next], y0 = g.row0(idx[k]);
    // Rows above y0 that no pending patch needs are skipped (no IDCT for JPEG).
    if (d.next_row() < y0) {
      d.skip(y0 - d.next_row());
      cur->valid_from = d.next_row();
    }
    while (d.next_row() < y0 + ph) {
      d.read(ring + (d.next_row() % ph) * row_bytes);  // read() advances next_row()
      cur->valid_from = std::max(cur->valid_from, d.next_row() - ph);
    }
    const int64_t x0 = g.col0(idx[k]) - d.col0();
    float* out = dst + k * C * plane;
    for (int64_t y = 0; y < ph; ++y) convert(ring + ((y0 + y) % ph) * row_bytes + x0 * C, pw, out + y * pw, plane);
  }
  return_cursor(std::move(cur));
}

}  // namespace data
}  // namespace ipsnet

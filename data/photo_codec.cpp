#include "data/photo_codec.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "engine/common/error.h"

#ifdef IPSNET_HAVE_JPEG
#include <jerror.h>
#include <jpeglib.h>
#endif

// libjpeg and libpng report errors by longjmp. Every function below that
// calls them sets its jump point first and creates no C++ object with a
// destructor between the jump point and the library calls; the error is
// turned into an ipsnet::Error after the jump returned.

namespace ipsnet {
namespace data {

const char* format_name(PhotoFormat f) {
  switch (f) {
    case PhotoFormat::kJpeg: return "jpeg";
    case PhotoFormat::kPng: return "png";
    default: return "unknown";
  }
}

PhotoFormat sniff_format(const uint8_t* p, size_t n) {
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
  if (n >= 8 && std::memcmp(p, kPng, 8) == 0) return PhotoFormat::kPng;
  if (n >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff) return PhotoFormat::kJpeg;
  return PhotoFormat::kUnknown;
}

bool jpeg_supported() {
#ifdef IPSNET_HAVE_JPEG
  return true;
#else
  return false;
#endif
}

#define IPSNET_STR2(x) #x
#define IPSNET_STR(x) IPSNET_STR2(x)
std::string codec_versions() {
  std::string s = std::string("PNG (libpng ") + png_get_libpng_ver(nullptr) + "), JPEG ";
#ifdef IPSNET_HAVE_JPEG
#ifdef LIBJPEG_TURBO_VERSION
  s += "(libjpeg-turbo " IPSNET_STR(LIBJPEG_TURBO_VERSION) ", API " IPSNET_STR(JPEG_LIB_VERSION) ")";
#else
  s += "(libjpeg API " IPSNET_STR(JPEG_LIB_VERSION) ")";
#endif
#else
  s += "not built (libjpeg62-turbo-dev was missing at configure time)";
#endif
  return s;
}
#undef IPSNET_STR
#undef IPSNET_STR2

namespace {

[[noreturn, maybe_unused]] void no_jpeg(const std::string& name) {
  IPSNET_FAIL(name, ": a JPEG file, but this ipsnet was built without JPEG support (install libjpeg62-turbo-dev "
                    "and configure with -DIPSNET_JPEG=ON)");
}

// ---- PNG -------------------------------------------------------------------

struct PngIo {
  const uint8_t* p = nullptr;
  size_t n = 0, pos = 0;
  char msg[256] = {0};
};

void png_read_mem(png_structp png, png_bytep out, png_size_t len) {
  PngIo* io = static_cast<PngIo*>(png_get_io_ptr(png));
  if (io->pos + len > io->n) png_error(png, "unexpected end of file (truncated)");
  std::memcpy(out, io->p + io->pos, len);
  io->pos += len;
}

void png_on_error(png_structp png, png_const_charp msg) {
  PngIo* io = static_cast<PngIo*>(png_get_error_ptr(png));
  std::snprintf(io->msg, sizeof(io->msg), "%s", msg);
  png_longjmp(png, 1);
}
void png_on_warning(png_structp, png_const_charp) {}

// A PNG being read: header, transforms to `want` channels (0: the file's own
// 1 or 3), then rows.
class PngReader {
 public:
  PngReader(const uint8_t* p, size_t n, std::string name) : name_(std::move(name)) {
    io_.p = p;
    io_.n = n;
  }
  ~PngReader() {
    if (png_) png_destroy_read_struct(&png_, info_ ? &info_ : nullptr, nullptr);
  }
  PngReader(const PngReader&) = delete;
  PngReader& operator=(const PngReader&) = delete;

  // Reads the header, sets the transforms; false on a library error (msg()).
  bool start(int want) {
    png_ = png_create_read_struct(PNG_LIBPNG_VER_STRING, &io_, png_on_error, png_on_warning);
    if (!png_) return fail_with("out of memory");
    info_ = png_create_info_struct(png_);
    if (!info_) return fail_with("out of memory");
    if (setjmp(png_jmpbuf(png_))) return false;
    png_set_read_fn(png_, &io_, png_read_mem);
    png_read_info(png_, info_);
    const int ct = png_get_color_type(png_, info_), depth = png_get_bit_depth(png_, info_);
    info.format = PhotoFormat::kPng;
    info.height = png_get_image_height(png_, info_);
    info.width = png_get_image_width(png_, info_);
    info.palette = ct == PNG_COLOR_TYPE_PALETTE;
    info.alpha = (ct & PNG_COLOR_MASK_ALPHA) != 0 || png_get_valid(png_, info_, PNG_INFO_tRNS) != 0;
    info.interlaced = png_get_interlace_type(png_, info_) != PNG_INTERLACE_NONE;
    info.channels = (ct & PNG_COLOR_MASK_COLOR) ? 3 : 1;  // palette images have the colour bit
    depth_ = depth;
    if (depth > 8) return fail_with("16-bit PNG (ipsnet reads 8-bit images; convert it to 8 bits)");
    if (want == 1 && info.channels == 3) return fail_with("a colour PNG in a grayscale set");
    channels_ = want == 0 ? info.channels : want;
    if (info.palette) png_set_palette_to_rgb(png_);
    if (ct == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png_);
    if (info.alpha) png_set_strip_alpha(png_);
    if (channels_ == 3 && info.channels == 1) png_set_gray_to_rgb(png_);
    passes_ = png_set_interlace_handling(png_);
    png_read_update_info(png_, info_);
    if (png_get_rowbytes(png_, info_) != static_cast<size_t>(info.width) * channels_ ||
        png_get_bit_depth(png_, info_) != 8)
      return fail_with("unsupported PNG layout");
    return true;
  }
  // Reads the next row (non-interlaced images).
  bool row(uint8_t* dst) {
    if (setjmp(png_jmpbuf(png_))) return false;
    png_read_row(png_, dst, nullptr);
    return true;
  }
  // Reads the whole image (any interlacing) into dst (H, W, C).
  bool image(uint8_t* dst) {
    rows_.resize(static_cast<size_t>(info.height));
    for (int64_t y = 0; y < info.height; ++y) rows_[static_cast<size_t>(y)] = dst + y * info.width * channels_;
    if (setjmp(png_jmpbuf(png_))) return false;
    png_read_image(png_, rows_.data());
    return true;
  }
  // Reads what follows the image data (to IEND), checking the chunks' CRCs.
  bool end() {
    if (setjmp(png_jmpbuf(png_))) return false;
    png_read_end(png_, nullptr);
    return true;
  }
  [[noreturn]] void raise() const { IPSNET_FAIL(name_, ": ", (io_.msg[0] ? io_.msg : "PNG error"), " (PNG)"); }
  int channels() const { return channels_; }
  int passes() const { return passes_; }
  PhotoInfo info;

 private:
  bool fail_with(const char* m) {
    std::snprintf(io_.msg, sizeof(io_.msg), "%s", m);
    return false;
  }
  std::string name_;
  PngIo io_;
  png_structp png_ = nullptr;
  png_infop info_ = nullptr;
  std::vector<png_bytep> rows_;
  int channels_ = 0, depth_ = 8, passes_ = 1;
};

class PngRowDecoder : public RowDecoder {
 public:
  PngRowDecoder(const uint8_t* p, size_t n, int channels, const std::string& name, int64_t c0, int64_t c1)
      : r_(p, n, name) {
    if (!r_.start(channels)) r_.raise();
    IPSNET_CHECK(!r_.info.interlaced, name, ": an interlaced PNG cannot be read row by row (ipsnet import-images "
                                            "stores PNGs non-interlaced)");
    height_ = r_.info.height;
    width_ = r_.info.width;
    channels_ = r_.channels();
    col0_ = std::max<int64_t>(0, c0);
    const int64_t end = c1 < 0 ? width_ : std::min(c1, width_);
    row_width_ = std::max<int64_t>(0, end - col0_);
    full_.resize(static_cast<size_t>(width_ * channels_));
  }
  void skip(int64_t rows) override {
    for (int64_t k = 0; k < rows && next_ < height_; ++k, ++next_)
      if (!r_.row(full_.data())) r_.raise();
  }
  void read(uint8_t* row) override {
    IPSNET_CHECK(next_ < height_, "PNG row ", next_, " past the last row ", height_ - 1);
    if (!r_.row(full_.data())) r_.raise();
    std::memcpy(row, full_.data() + col0_ * channels_, static_cast<size_t>(row_width_ * channels_));
    ++next_;
  }

 private:
  PngReader r_;
  std::vector<uint8_t> full_;
};

void png_write_mem(png_structp png, png_bytep data, png_size_t len) {
  auto* out = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(png));
  out->insert(out->end(), data, data + len);
}
void png_flush_mem(png_structp) {}

// ---- JPEG ------------------------------------------------------------------
#ifdef IPSNET_HAVE_JPEG

struct JpegErr {
  jpeg_error_mgr pub;
  jmp_buf jmp;
  char msg[JMSG_LENGTH_MAX];
  char warning[JMSG_LENGTH_MAX];
  int warnings;
};

void jpeg_on_error(j_common_ptr c) {
  JpegErr* e = reinterpret_cast<JpegErr*>(c->err);
  (*c->err->format_message)(c, e->msg);
  std::longjmp(e->jmp, 1);
}
void jpeg_on_message(j_common_ptr c, int level) {
  if (level >= 0) return;  // trace messages
  JpegErr* e = reinterpret_cast<JpegErr*>(c->err);
  // Stray bytes between markers are harmless and common in camera files;
  // any other warning (premature end of data, corrupt entropy data) is an error.
  if (c->err->msg_code == JWRN_EXTRANEOUS_DATA) return;
  if (e->warnings++ == 0) (*c->err->format_message)(c, e->warning);
}

class JpegRowDecoder : public RowDecoder {
 public:
  JpegRowDecoder(const uint8_t* p, size_t n, std::string name) : name_(std::move(name)), p_(p), n_(n) {
    std::memset(&err_, 0, sizeof(err_));
    std::memset(&cinfo_, 0, sizeof(cinfo_));
  }
  ~JpegRowDecoder() override {
    if (created_) jpeg_destroy_decompress(&cinfo_);
  }
  // Header, colour space; want: 0 (the file's own), 1 or 3.
  void start(int want, int64_t c0, int64_t c1) {
    if (!start_c(want, c0, c1)) raise();
    if (bad_[0]) IPSNET_FAIL(name_, ": ", bad_);
  }
  void skip(int64_t rows) override {
    if (!skip_c(rows)) raise();
  }
  void read(uint8_t* row) override {
    IPSNET_CHECK(next_ < height_, "JPEG row ", next_, " past the last row ", height_ - 1);
    if (!read_c(row)) raise();
  }
  // Reads to the end of the stream (all rows must have been read).
  void finish() {
    if (!finish_c()) raise();
  }
  // A warning (corrupt or truncated data) seen so far: throws it.
  void check_warnings() const {
    if (err_.warnings > 0) IPSNET_FAIL(name_, ": corrupt JPEG data: ", err_.warning, " (JPEG)");
  }
  PhotoInfo info;

 private:
  [[noreturn]] void raise() const { IPSNET_FAIL(name_, ": ", err_.msg, " (JPEG)"); }
  bool start_c(int want, int64_t c0, int64_t c1) {
    cinfo_.err = jpeg_std_error(&err_.pub);
    err_.pub.error_exit = jpeg_on_error;
    err_.pub.emit_message = jpeg_on_message;
    if (setjmp(err_.jmp)) return false;
    jpeg_create_decompress(&cinfo_);
    created_ = true;
    jpeg_mem_src(&cinfo_, p_, static_cast<unsigned long>(n_));
    jpeg_read_header(&cinfo_, TRUE);
    info.format = PhotoFormat::kJpeg;
    info.height = cinfo_.image_height;
    info.width = cinfo_.image_width;
    info.interlaced = jpeg_has_multiple_scans(&cinfo_) != 0;
    const J_COLOR_SPACE cs = cinfo_.jpeg_color_space;
    if (cs == JCS_GRAYSCALE && cinfo_.num_components == 1) {
      info.channels = 1;
    } else if ((cs == JCS_YCbCr || cs == JCS_RGB) && cinfo_.num_components == 3) {
      info.channels = 3;
    } else {
      std::snprintf(bad_, sizeof(bad_), "%s JPEG with %d components (ipsnet reads gray or RGB/YCbCr JPEGs; "
                    "convert it to RGB)", cs == JCS_CMYK ? "a CMYK" : cs == JCS_YCCK ? "a YCCK (Adobe CMYK)"
                    : "an unsupported colour space:", cinfo_.num_components);
      return true;
    }
    if (want == 1 && info.channels == 3) {
      std::snprintf(bad_, sizeof(bad_), "a colour JPEG in a grayscale set");
      return true;
    }
    channels_ = want == 0 ? info.channels : want;
    cinfo_.out_color_space = channels_ == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_start_decompress(&cinfo_);
    height_ = cinfo_.output_height;
    width_ = cinfo_.output_width;
    col0_ = 0;
    row_width_ = width_;
    const int64_t e = c1 < 0 ? width_ : std::min<int64_t>(c1, width_);
    if (c0 > 0 || e < width_) {
      // One iMCU of margin: fancy upsampling at a crop edge replicates the
      // edge instead of reading the neighbour.
      const int64_t imcu = static_cast<int64_t>(cinfo_.max_h_samp_factor) * cinfo_.min_DCT_scaled_size;
      JDIMENSION x0 = static_cast<JDIMENSION>(std::max<int64_t>(0, c0 - imcu));
      JDIMENSION w = static_cast<JDIMENSION>(std::min<int64_t>(width_, e + imcu) - x0);
      if (x0 > 0 || static_cast<int64_t>(w) < width_) {
        jpeg_crop_scanline(&cinfo_, &x0, &w);
        col0_ = x0;
        row_width_ = w;
      }
    }
    return true;
  }
  bool skip_c(int64_t rows) {
    if (setjmp(err_.jmp)) return false;
    const int64_t k = std::min<int64_t>(rows, height_ - next_);
    if (k > 0) jpeg_skip_scanlines(&cinfo_, static_cast<JDIMENSION>(k));
    next_ = cinfo_.output_scanline;
    return true;
  }
  bool read_c(uint8_t* row) {
    if (setjmp(err_.jmp)) return false;
    JSAMPROW r = row;
    if (jpeg_read_scanlines(&cinfo_, &r, 1) != 1) {
      std::snprintf(err_.msg, sizeof(err_.msg), "no data for row %lld", static_cast<long long>(next_));
      return false;
    }
    next_ = cinfo_.output_scanline;
    return true;
  }
  bool finish_c() {
    if (setjmp(err_.jmp)) return false;
    jpeg_finish_decompress(&cinfo_);
    return true;
  }
  std::string name_;
  const uint8_t* p_;
  size_t n_;
  jpeg_decompress_struct cinfo_;
  JpegErr err_;
  bool created_ = false;
  char bad_[256] = {0};
};

struct JpegEncodeState {
  jpeg_compress_struct cinfo;
  JpegErr err;
  unsigned char* buf = nullptr;
  unsigned long size = 0;
};

bool encode_jpeg_c(JpegEncodeState& s, const uint8_t* pixels, int64_t h, int64_t w, int c, int quality,
                   bool progressive) {
  s.cinfo.err = jpeg_std_error(&s.err.pub);
  s.err.pub.error_exit = jpeg_on_error;
  if (setjmp(s.err.jmp)) return false;
  jpeg_create_compress(&s.cinfo);
  jpeg_mem_dest(&s.cinfo, &s.buf, &s.size);
  s.cinfo.image_width = static_cast<JDIMENSION>(w);
  s.cinfo.image_height = static_cast<JDIMENSION>(h);
  s.cinfo.input_components = c;
  s.cinfo.in_color_space = c == 3 ? JCS_RGB : JCS_GRAYSCALE;
  jpeg_set_defaults(&s.cinfo);
  jpeg_set_quality(&s.cinfo, quality, TRUE);
  if (c == 3 && quality >= 90)
    for (int k = 0; k < 3; ++k) s.cinfo.comp_info[k].h_samp_factor = s.cinfo.comp_info[k].v_samp_factor = 1;
  if (progressive) jpeg_simple_progression(&s.cinfo);
  jpeg_start_compress(&s.cinfo, TRUE);
  while (s.cinfo.next_scanline < s.cinfo.image_height) {
    JSAMPROW r = const_cast<uint8_t*>(pixels) + static_cast<int64_t>(s.cinfo.next_scanline) * w * c;
    jpeg_write_scanlines(&s.cinfo, &r, 1);
  }
  jpeg_finish_compress(&s.cinfo);
  return true;
}

#endif  // IPSNET_HAVE_JPEG

}  // namespace

// ---- public entries ---------------------------------------------------------

PhotoInfo check_photo(const uint8_t* p, size_t n, const std::string& name) {
  const PhotoFormat f = sniff_format(p, n);
  if (f == PhotoFormat::kPng) {
    PngReader r(p, n, name);
    if (!r.start(0)) r.raise();
    IPSNET_CHECK(r.info.height >= 1 && r.info.width >= 1, name, ": empty PNG (", r.info.height, "x", r.info.width,
                 ")");
    if (r.passes() > 1) {
      std::vector<uint8_t> all(static_cast<size_t>(r.info.height * r.info.width * r.channels()));
      if (!r.image(all.data())) r.raise();
    } else {
      std::vector<uint8_t> row(static_cast<size_t>(r.info.width * r.channels()));
      for (int64_t y = 0; y < r.info.height; ++y)
        if (!r.row(row.data())) r.raise();
    }
    if (!r.end()) r.raise();
    return r.info;
  }
  if (f == PhotoFormat::kJpeg) {
#ifdef IPSNET_HAVE_JPEG
    JpegRowDecoder d(p, n, name);
    d.start(0, 0, -1);
    std::vector<uint8_t> row(static_cast<size_t>(d.row_width() * d.channels()));
    for (int64_t y = 0; y < d.height(); ++y) d.read(row.data());
    d.finish();
    d.check_warnings();
    return d.info;
#else
    no_jpeg(name);
#endif
  }
  IPSNET_FAIL(name, ": neither a PNG nor a JPEG file (", n < 8 ? "too short" : "unknown signature", ")");
}

std::vector<uint8_t> decode_photo(const uint8_t* p, size_t n, int channels, const std::string& name,
                                  int64_t* height, int64_t* width) {
  IPSNET_CHECK(channels == 1 || channels == 3, name, ": decode to 1 or 3 channels, not ", channels);
  const PhotoFormat f = sniff_format(p, n);
  if (f == PhotoFormat::kPng) {
    PngReader r(p, n, name);
    if (!r.start(channels)) r.raise();
    std::vector<uint8_t> out(static_cast<size_t>(r.info.height * r.info.width * channels));
    if (!r.image(out.data())) r.raise();
    *height = r.info.height;
    *width = r.info.width;
    return out;
  }
  std::unique_ptr<RowDecoder> d = RowDecoder::open(p, n, channels, name);
  std::vector<uint8_t> out(static_cast<size_t>(d->height() * d->width() * channels));
  for (int64_t y = 0; y < d->height(); ++y) d->read(out.data() + y * d->width() * channels);
  *height = d->height();
  *width = d->width();
  return out;
}

std::unique_ptr<RowDecoder> RowDecoder::open(const uint8_t* p, size_t n, int channels, const std::string& name,
                                             int64_t c0, int64_t c1) {
  IPSNET_CHECK(channels == 1 || channels == 3, name, ": decode to 1 or 3 channels, not ", channels);
  const PhotoFormat f = sniff_format(p, n);
  if (f == PhotoFormat::kPng) return std::make_unique<PngRowDecoder>(p, n, channels, name, c0, c1);
  if (f == PhotoFormat::kJpeg) {
#ifdef IPSNET_HAVE_JPEG
    auto d = std::make_unique<JpegRowDecoder>(p, n, name);
    d->start(channels, c0, c1);
    return d;
#else
    no_jpeg(name);
#endif
  }
  IPSNET_FAIL(name, ": neither a PNG nor a JPEG file");
}

std::vector<uint8_t> encode_png(const uint8_t* pixels, int64_t height, int64_t width, int channels) {
  IPSNET_CHECK(channels == 1 || channels == 3, "encode_png: 1 or 3 channels, not ", channels);
  IPSNET_CHECK(height >= 1 && width >= 1 && height <= 0x7fffffff && width <= 0x7fffffff, "encode_png: size ",
               height, "x", width);
  std::vector<uint8_t> out;
  PngIo io;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &io, png_on_error, png_on_warning);
  IPSNET_CHECK(png != nullptr, "encode_png: out of memory");
  png_infop info = png_create_info_struct(png);
  volatile bool ok = false;
  if (info && !setjmp(png_jmpbuf(png))) {
    png_set_write_fn(png, &out, png_write_mem, png_flush_mem);
    png_set_IHDR(png, info, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height), 8,
                 channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int64_t y = 0; y < height; ++y) png_write_row(png, pixels + y * width * channels);
    png_write_end(png, nullptr);
    ok = true;
  }
  png_destroy_write_struct(&png, info ? &info : nullptr);
  IPSNET_CHECK(ok, "encode_png: ", io.msg[0] ? io.msg : "libpng error");
  return out;
}

std::vector<uint8_t> encode_jpeg(const uint8_t* pixels, int64_t height, int64_t width, int channels, int quality,
                                 bool progressive) {
#ifdef IPSNET_HAVE_JPEG
  IPSNET_CHECK(channels == 1 || channels == 3, "encode_jpeg: 1 or 3 channels, not ", channels);
  IPSNET_CHECK(height >= 1 && width >= 1 && height <= 65500 && width <= 65500, "encode_jpeg: size ", height, "x",
               width, " (JPEG sides are at most 65500)");
  IPSNET_CHECK(quality >= 1 && quality <= 100, "encode_jpeg: quality ", quality, " outside 1..100");
  JpegEncodeState s;
  std::memset(&s.cinfo, 0, sizeof(s.cinfo));
  std::memset(&s.err, 0, sizeof(s.err));
  const bool ok = encode_jpeg_c(s, pixels, height, width, channels, quality, progressive);
  std::vector<uint8_t> out;
  if (ok) out.assign(s.buf, s.buf + s.size);
  jpeg_destroy_compress(&s.cinfo);
  std::free(s.buf);
  IPSNET_CHECK(ok, "encode_jpeg: ", s.err.msg);
  return out;
#else
  no_jpeg("encode_jpeg");
#endif
}

// ---- PIL's bilinear resampling ----------------------------------------------

namespace {
constexpr int kPrecisionBits = 32 - 8 - 2;

// PIL's precompute_coeffs + normalize_coeffs_8bpc for the triangle filter
// (support 1) over the box [0, in).
void pil_coeffs(int64_t in, int64_t out, std::vector<int64_t>& bounds, std::vector<int32_t>& kk, int64_t& ksize) {
  const double scale = static_cast<double>(in) / out;
  const double filterscale = std::max(scale, 1.0);
  const double support = 1.0 * filterscale;
  ksize = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  bounds.assign(static_cast<size_t>(out * 2), 0);
  kk.assign(static_cast<size_t>(out * ksize), 0);
  std::vector<double> k(static_cast<size_t>(ksize));
  for (int64_t xx = 0; xx < out; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int64_t xmin = static_cast<int64_t>(center - support + 0.5);  // truncation, as C's (int)
    if (xmin < 0) xmin = 0;
    int64_t xmax = static_cast<int64_t>(center + support + 0.5);
    if (xmax > in) xmax = in;
    xmax -= xmin;
    double ww = 0.0;
    for (int64_t x = 0; x < xmax; ++x) {
      double t = std::fabs((x + xmin - center + 0.5) * ss);
      const double w = t < 1.0 ? 1.0 - t : 0.0;
      k[static_cast<size_t>(x)] = w;
      ww += w;
    }
    for (int64_t x = 0; x < ksize; ++x) {
      double v = x < xmax ? (ww != 0.0 ? k[static_cast<size_t>(x)] / ww : k[static_cast<size_t>(x)]) : 0.0;
      kk[static_cast<size_t>(xx * ksize + x)] =
          v < 0 ? static_cast<int32_t>(-0.5 + v * (1 << kPrecisionBits))
                : static_cast<int32_t>(0.5 + v * (1 << kPrecisionBits));
    }
    bounds[static_cast<size_t>(xx * 2)] = xmin;
    bounds[static_cast<size_t>(xx * 2 + 1)] = xmax;
  }
}

inline uint8_t clip8(int64_t v) {
  v >>= kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}
}  // namespace

std::vector<uint8_t> resize_bilinear_pil(const uint8_t* src, int64_t in_h, int64_t in_w, int c, int64_t out_h,
                                         int64_t out_w) {
  IPSNET_CHECK(in_h >= 1 && in_w >= 1 && out_h >= 1 && out_w >= 1, "resize: ", in_h, "x", in_w, " -> ", out_h, "x",
               out_w);
  // Horizontal pass (PIL skips a pass whose size does not change).
  std::vector<uint8_t> mid;
  const uint8_t* h_out = src;
  if (out_w != in_w) {
    std::vector<int64_t> b;
    std::vector<int32_t> kk;
    int64_t ks = 0;
    pil_coeffs(in_w, out_w, b, kk, ks);
    mid.resize(static_cast<size_t>(in_h * out_w * c));
    for (int64_t y = 0; y < in_h; ++y)
      for (int64_t x = 0; x < out_w; ++x) {
        const int64_t x0 = b[static_cast<size_t>(2 * x)], n = b[static_cast<size_t>(2 * x + 1)];
        const int32_t* k = &kk[static_cast<size_t>(x * ks)];
        for (int ch = 0; ch < c; ++ch) {
          int64_t ss = 1 << (kPrecisionBits - 1);
          for (int64_t t = 0; t < n; ++t) ss += static_cast<int64_t>(src[(y * in_w + x0 + t) * c + ch]) * k[t];
          mid[static_cast<size_t>((y * out_w + x) * c + ch)] = clip8(ss);
        }
      }
    h_out = mid.data();
  }
  if (out_h == in_h) {
    if (out_w != in_w) return mid;
    return std::vector<uint8_t>(src, src + in_h * in_w * c);
  }
  std::vector<int64_t> b;
  std::vector<int32_t> kk;
  int64_t ks = 0;
  pil_coeffs(in_h, out_h, b, kk, ks);
  std::vector<uint8_t> out(static_cast<size_t>(out_h * out_w * c));
  for (int64_t y = 0; y < out_h; ++y) {
    const int64_t y0 = b[static_cast<size_t>(2 * y)], n = b[static_cast<size_t>(2 * y + 1)];
    const int32_t* k = &kk[static_cast<size_t>(y * ks)];
    for (int64_t x = 0; x < out_w * c; ++x) {
      int64_t ss = 1 << (kPrecisionBits - 1);
      for (int64_t t = 0; t < n; ++t) ss += static_cast<int64_t>(h_out[(y0 + t) * out_w * c + x]) * k[t];
      out[static_cast<size_t>(y * out_w * c + x)] = clip8(ss);
    }
  }
  return out;
}

}  // namespace data
}  // namespace ipsnet

#include "data/png_writer.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "data/dataset.h"
#include "engine/common/error.h"
#include "engine/common/files.h"

namespace ipsnet {
namespace data {

namespace {
struct PngError {
  char msg[256] = {};
};

void on_png_error(png_structp png, png_const_charp msg) {
  auto* e = static_cast<PngError*>(png_get_error_ptr(png));
  std::snprintf(e->msg, sizeof(e->msg), "%s", msg);
  png_longjmp(png, 1);
}
void on_png_warning(png_structp, png_const_charp) {}
void on_png_write(png_structp png, png_bytep data, size_t n) {
  bool ok = true;
  try {  // no C++ exception may cross libpng's C frames
    static_cast<std::string*>(png_get_io_ptr(png))->append(reinterpret_cast<const char*>(data), n);
  } catch (...) {
    ok = false;
  }
  if (!ok) png_error(png, "out of memory while encoding");
}
void on_png_flush(png_structp) {}
}  // namespace

void write_png(const std::string& path, int64_t width, int64_t height, int channels,
               const std::vector<uint8_t>& pixels) {
  IPSNET_CHECK(channels == 1 || channels == 3, "write_png: channels must be 1 or 3, got ", channels);
  IPSNET_CHECK(width > 0 && height > 0 && width <= (1 << 24) && height <= (1 << 24), "write_png: bad size ", width,
               "x", height);
  IPSNET_CHECK(static_cast<int64_t>(pixels.size()) == width * height * channels, "write_png: ", pixels.size(),
               " bytes for a ", width, "x", height, "x", channels, " image");
  // libpng encodes into memory; AtomicFile then writes the bytes (checked,
  // under a temporary name, renamed into place).
  PngError err;
  std::string encoded;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &err, on_png_error, on_png_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!png || !info) {
    if (png) png_destroy_write_struct(&png, nullptr);
    IPSNET_FAIL("libpng could not start writing '", path, "'");
  }
  std::vector<png_bytep> rows(height);
  for (int64_t r = 0; r < height; ++r)
    rows[r] = const_cast<png_bytep>(pixels.data() + r * width * channels);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    IPSNET_FAIL("writing PNG '", path, "' failed: ", err.msg);
  }
  png_set_write_fn(png, &encoded, on_png_write, on_png_flush);
  png_set_IHDR(png, info, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height), 8,
               channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_compression_level(png, 3);
  png_write_info(png, info);
  png_write_image(png, rows.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  write_file_atomic(path, encoded);
}

namespace {

// A 3x5 bitmap font: digits, a few letters, '=' and ' '.
const char* glyph(char ch) {
  switch (ch) {
    case '0': return "111101101101111";
    case '1': return "010110010010111";
    case '2': return "111001111100111";
    case '3': return "111001111001111";
    case '4': return "101101111001001";
    case '5': return "111100111001111";
    case '6': return "111100111101111";
    case '7': return "111001010010010";
    case '8': return "111101111101111";
    case '9': return "111101111001111";
    case 'M': return "101111111101101";
    case 'A': return "010101111101101";
    case 'J': return "001001001101111";
    case 'X': return "101101010101101";
    case 'T': return "111010010010010";
    case 'O': return "111101101101111";
    case 'P': return "111101111100100";
    case 'U': return "101101101101111";
    case 'L': return "100100100100111";
    case 'I': return "111010010010111";
    case '=': return "000111000111000";
    case '-': return "000000111000000";
    default: return "000000000000000";
  }
}

struct Rgb {
  uint8_t r, g, b;
};

struct Canvas {
  int64_t w, h;
  std::vector<uint8_t> px;
  void set(int64_t r, int64_t c, Rgb col) {
    if (r < 0 || c < 0 || r >= h || c >= w) return;
    uint8_t* p = &px[(r * w + c) * 3];
    p[0] = col.r, p[1] = col.g, p[2] = col.b;
  }
  void rect(int64_t r0, int64_t c0, int64_t r1, int64_t c1, Rgb col, int64_t t) {
    for (int64_t k = 0; k < t; ++k) {
      for (int64_t c = c0 - k; c <= c1 + k; ++c) set(r0 - k, c, col), set(r1 + k, c, col);
      for (int64_t r = r0 - k; r <= r1 + k; ++r) set(r, c0 - k, col), set(r, c1 + k, col);
    }
  }
  void text(int64_t r, int64_t c, const std::string& s, Rgb col, int64_t scale) {
    for (size_t i = 0; i < s.size(); ++i) {
      const char* g = glyph(s[i]);
      for (int gy = 0; gy < 5; ++gy)
        for (int gx = 0; gx < 3; ++gx)
          if (g[gy * 3 + gx] == '1')
            for (int64_t a = 0; a < scale; ++a)
              for (int64_t b = 0; b < scale; ++b)
                set(r + gy * scale + a, c + (static_cast<int64_t>(i) * 4 + gx) * scale + b, col);
    }
  }
};

}  // namespace

void write_preview_png(const DatasetReader& reader, int64_t i, const std::string& path, int64_t max_side) {
  const int64_t H = reader.height(), W = reader.width();
  std::vector<float> img(H * W);
  reader.read_image(i, img.data());
  int64_t f = 1;
  if (max_side > 0)
    while ((H + f - 1) / f > max_side || (W + f - 1) / f > max_side) ++f;
  Canvas cv{(W + f - 1) / f, (H + f - 1) / f, {}};
  cv.px.assign(cv.w * cv.h * 3, 0);
  for (int64_t r = 0; r < H; ++r)
    for (int64_t c = 0; c < W; ++c) {
      uint8_t v = static_cast<uint8_t>(std::lround(std::clamp(img[r * W + c], 0.0f, 1.0f) * 255.0f));
      uint8_t* p = &cv.px[((r / f) * cv.w + c / f) * 3];
      if (v > p[0]) p[0] = p[1] = p[2] = v;
    }
  const ImageMeta& m = reader.meta(i);
  int64_t scale = std::max<int64_t>(2, std::min(H, W) / f / 250);
  const Rgb green{40, 220, 60}, red{235, 50, 50}, yellow{250, 220, 40};
  for (const auto& d : m.digits) {
    Rgb col = d.label == m.majority ? green : red;
    int64_t r0 = d.row / f - 1, c0 = d.col / f - 1, r1 = (d.row + d.size - 1) / f + 1, c1 = (d.col + d.size - 1) / f + 1;
    cv.rect(r0, c0, r1, c1, col, 1);
    int64_t ty = r0 - 6 * scale - 2;
    if (ty < 0) ty = r1 + 3;
    cv.text(ty, c0, std::to_string(d.label), col, scale);
  }
  auto lab = [](int v) { return v < 0 ? std::string("-") : std::to_string(v); };
  std::string legend = "MAJ=" + lab(m.majority) + " MAX=" + lab(m.max) + " TOP=" + lab(m.top);
  cv.text(2 * scale, 2 * scale, legend, yellow, scale);
  write_png(path, cv.w, cv.h, 3, cv.px);
}

}  // namespace data
}  // namespace ipsnet

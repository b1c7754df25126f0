// Photographs for the tests, written in the real formats by libpng and
// libjpeg (no download): smooth colour fields with texture, and the odd
// kinds a user's folder may hold (palette, 16-bit, gray+alpha, interlaced,
// CMYK, progressive, truncated, corrupt).
#pragma once
#include <png.h>
#include <unistd.h>

#include <cstdlib>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/photo_codec.h"

#ifdef IPSNET_HAVE_JPEG
#include <jpeglib.h>
#endif

namespace ipsnet {
namespace testing_photo {

/// A fresh directory removed at scope exit.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/ipsnet_photo_test_XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

/// (h, w, c) uint8: gradients, a few discs and deterministic texture.
inline std::vector<uint8_t> make_pixels(int64_t h, int64_t w, int c, uint32_t seed) {
  std::vector<uint8_t> px(static_cast<size_t>(h * w * c));
  uint32_t s = seed * 2654435761u + 1;
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      s = s * 1664525u + 1013904223u;
      const double noise = ((s >> 24) & 31) - 16.0;
      for (int k = 0; k < c; ++k) {
        double v = 128 + 90 * std::sin(0.03 * x * (k + 1) + 0.05 * y + seed) + noise;
        const double dx = x - w * 0.3 - 10.0 * k, dy = y - h * 0.6;
        if (dx * dx + dy * dy < (h * h) / 25.0) v = 230 - 60 * k;
        px[static_cast<size_t>((y * w + x) * c + k)] = static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
      }
    }
  return px;
}

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline void png_write_vec(png_structp png, png_bytep d, png_size_t n) {
  static_cast<std::vector<uint8_t>*>(png_get_io_ptr(png))->insert(
      static_cast<std::vector<uint8_t>*>(png_get_io_ptr(png))->end(), d, d + n);
}
inline void png_flush_vec(png_structp) {}

/// Any PNG libpng writes: color_type / bit_depth as libpng names them; rows
/// of raw bytes as that type stores them; optional palette and tRNS.
inline std::vector<uint8_t> raw_png(int64_t h, int64_t w, int color_type, int bit_depth,
                                    const std::vector<uint8_t>& rows_bytes, bool interlace = false,
                                    const std::vector<png_color>& palette = {},
                                    const std::vector<uint8_t>& trans = {}) {
  std::vector<uint8_t> out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return {};
  }
  png_set_write_fn(png, &out, png_write_vec, png_flush_vec);
  png_set_IHDR(png, info, static_cast<png_uint_32>(w), static_cast<png_uint_32>(h), bit_depth, color_type,
               interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (!palette.empty()) png_set_PLTE(png, info, palette.data(), static_cast<int>(palette.size()));
  if (!trans.empty()) png_set_tRNS(png, info, trans.data(), static_cast<int>(trans.size()), nullptr);
  png_write_info(png, info);
  const size_t row = rows_bytes.size() / static_cast<size_t>(h);
  std::vector<png_bytep> rows(static_cast<size_t>(h));
  for (int64_t y = 0; y < h; ++y) rows[static_cast<size_t>(y)] = const_cast<uint8_t*>(rows_bytes.data()) + y * row;
  png_write_image(png, rows.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

#ifdef IPSNET_HAVE_JPEG
/// A CMYK (Adobe) JPEG of (h, w, 4) bytes.
inline std::vector<uint8_t> cmyk_jpeg(int64_t h, int64_t w) {
  jpeg_compress_struct c;
  jpeg_error_mgr e;
  c.err = jpeg_std_error(&e);
  jpeg_create_compress(&c);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &buf, &size);
  c.image_width = static_cast<JDIMENSION>(w);
  c.image_height = static_cast<JDIMENSION>(h);
  c.input_components = 4;
  c.in_color_space = JCS_CMYK;
  jpeg_set_defaults(&c);
  jpeg_start_compress(&c, TRUE);
  std::vector<uint8_t> row(static_cast<size_t>(w * 4));
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w * 4; ++x) row[static_cast<size_t>(x)] = static_cast<uint8_t>((x + y) & 255);
    JSAMPROW r = row.data();
    jpeg_write_scanlines(&c, &r, 1);
  }
  jpeg_finish_compress(&c);
  std::vector<uint8_t> out(buf, buf + size);
  jpeg_destroy_compress(&c);
  std::free(buf);
  return out;
}
/// A JPEG with 4:2:0 chroma (libjpeg's default subsampling at quality 75).
inline std::vector<uint8_t> jpeg_420(const std::vector<uint8_t>& px, int64_t h, int64_t w, bool progressive) {
  return data::encode_jpeg(px.data(), h, w, 3, 75, progressive);
}
#else
// Without libjpeg the JPEG tests skip before these are called.
inline std::vector<uint8_t> cmyk_jpeg(int64_t, int64_t) { return {}; }
inline std::vector<uint8_t> jpeg_420(const std::vector<uint8_t>& px, int64_t h, int64_t w, bool progressive) {
  return data::encode_jpeg(px.data(), h, w, 3, 75, progressive);
}
#endif

}  // namespace testing_photo
}  // namespace ipsnet

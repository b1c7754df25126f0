// Photographs in their compressed form: JPEG (libjpeg-turbo) and PNG
// (libpng), 8-bit grayscale or RGB. Probing and full validation, whole-image
// decoding, encoding, and a row decoder that reads an image top to bottom,
// skipping rows and cropping columns, so that a lazy reader holds a band of
// rows rather than the image (docs/data.md, "Photographs").
//
// Pixels are interleaved uint8, (H, W, C) row-major, C = 1 or 3. What
// converts silently and what is refused is decided here (check_photo):
//   converted: PNG palette -> RGB; PNG gray of 1/2/4 bits -> 8 bits; alpha
//              (PNG gray+alpha, RGBA, palette transparency) dropped; gray
//              decoded as RGB (replicated) in a colour set;
//   refused:   16-bit PNG, CMYK/YCCK or other non-gray/non-YCbCr JPEG,
//              corrupt or truncated data (libjpeg's warnings count as errors),
//              anything that is neither PNG nor JPEG.
// Every error is one line that starts with the name the caller gives.
//
// Without libjpeg at build time (IPSNET_HAVE_JPEG undefined) every JPEG entry
// throws "JPEG support was not built".
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ipsnet {
namespace data {

enum class PhotoFormat : uint8_t { kUnknown = 0, kJpeg = 1, kPng = 2 };

/// "jpeg" | "png" | "unknown".
const char* format_name(PhotoFormat f);
/// From the file's first bytes (not its extension).
PhotoFormat sniff_format(const uint8_t* p, size_t n);
/// True when ipsnet was built with libjpeg(-turbo).
bool jpeg_supported();
/// One line for `ipsnet info`: the PNG and JPEG libraries built in (or that JPEG is not).
std::string codec_versions();

/// What a file holds, as found by check_photo.
struct PhotoInfo {
  PhotoFormat format = PhotoFormat::kUnknown;
  int64_t height = 0, width = 0;
  int channels = 0;         ///< 1 (gray) or 3 (colour) after the silent conversions
  bool palette = false;     ///< PNG palette (expanded to RGB)
  bool alpha = false;       ///< an alpha channel or transparency was dropped
  bool interlaced = false;  ///< PNG Adam7 or progressive JPEG
};

/// Reads the header and decodes every row (one row at a time, so memory does
/// not grow with the image): throws one line starting with `name` when the
/// file is corrupt, truncated, or of a refused kind.
PhotoInfo check_photo(const uint8_t* p, size_t n, const std::string& name);

/// The whole image decoded to `channels` (1 or 3; gray is replicated to RGB;
/// colour to gray is refused) as (H, W, channels) uint8.
std::vector<uint8_t> decode_photo(const uint8_t* p, size_t n, int channels, const std::string& name,
                                  int64_t* height, int64_t* width);

/// Encodes (H, W, C) uint8, C = 1 or 3, as an 8-bit non-interlaced PNG.
std::vector<uint8_t> encode_png(const uint8_t* pixels, int64_t height, int64_t width, int channels);
/// Encodes (H, W, C) uint8, C = 1 or 3, as a baseline JPEG (4:4:4 at quality
/// >= 90, libjpeg's 4:2:0 below; progressive on request).
std::vector<uint8_t> encode_jpeg(const uint8_t* pixels, int64_t height, int64_t width, int channels, int quality,
                                 bool progressive = false);

/// Reads an image top to bottom, `channels` per pixel, columns [col0(),
/// col0() + row_width()) of each row. For JPEG the column range requested is
/// widened to whole iMCUs plus one iMCU of margin on each side (so that
/// fancy upsampling sees the same neighbours as a whole decode and the values
/// are identical); skipped rows are not colour-converted or upsampled. For
/// PNG every row is inflated, but only one row is held. Not thread-safe (one
/// per reader); the encoded bytes must outlive it.
class RowDecoder {
 public:
  virtual ~RowDecoder() = default;
  /// Columns [c0, c1) wanted (c1 = -1: to the end).
  static std::unique_ptr<RowDecoder> open(const uint8_t* p, size_t n, int channels, const std::string& name,
                                          int64_t c0 = 0, int64_t c1 = -1);
  int64_t height() const { return height_; }
  int64_t width() const { return width_; }
  int channels() const { return channels_; }
  int64_t col0() const { return col0_; }
  int64_t row_width() const { return row_width_; }
  /// The next row read() returns.
  int64_t next_row() const { return next_; }
  /// Skips `rows` rows.
  virtual void skip(int64_t rows) = 0;
  /// The next row: row_width() * channels() bytes.
  virtual void read(uint8_t* row) = 0;

 protected:
  int64_t height_ = 0, width_ = 0, col0_ = 0, row_width_ = 0, next_ = 0;
  int channels_ = 0;
};

/// Resizes (H, W, C) uint8 to (out_h, out_w, C) as torchvision's
/// Resize([out_h, out_w]) of a PIL image does: PIL's bilinear resampling
/// (a triangle filter whose support grows with the reduction, i.e.
/// anti-aliased when shrinking), horizontal pass first, 8-bit rounding after
/// each pass, fixed-point weights with 22 fractional bits.
std::vector<uint8_t> resize_bilinear_pil(const uint8_t* src, int64_t in_h, int64_t in_w, int channels,
                                         int64_t out_h, int64_t out_w);

}  // namespace data
}  // namespace ipsnet

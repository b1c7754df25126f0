// PNG output through libpng, plus the dataset preview (digit boxes, labels).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ipsnet {
namespace data {

class DatasetReader;

/// Writes an 8-bit PNG. pixels: (height, width, channels) row-major;
/// channels 1 (gray) or 3 (RGB). Throws naming the path on any failure.
void write_png(const std::string& path, int64_t width, int64_t height, int channels,
               const std::vector<uint8_t>& pixels);

/// Renders image i of reader as RGB: the canvas in gray, every digit box
/// outlined (green: the majority class, red: the two others) with its label
/// drawn above it, and the four labels in the top-left corner. max_side
/// bounds the PNG's larger side (the canvas is downscaled by max-pooling so
/// thin strokes survive; 0 keeps full resolution).
void write_preview_png(const DatasetReader& reader, int64_t i, const std::string& path, int64_t max_side = 1500);

}  // namespace data
}  // namespace ipsnet

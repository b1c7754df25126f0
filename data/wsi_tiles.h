// Tissue tiles of whole-slide images: the IPS reference's foreground rule,
// the tile grid, ipsnet's per-slide tile file, and the slide lists of the
// CAMELYON16 layout or a CSV (`ipsnet wsi-tiles`, docs/wsi.md).
//
// Foreground rule (the reference's otsu.py + foreground.py, one pass):
//   gray = R + B - (R + G + B) / 1.5, clipped to [0, 255] and truncated to an
//          integer (NumPy's astype(uint8) after clip);
//   t    = Otsu's threshold of the gray histogram at the mask level
//          (scikit-image's threshold_otsu on an integer image);
//   mask = gray > t, extended by the 4-connected components of gray > 0.25 t
//          that touch it (hysteresis);
//   a tile is kept when at least `min_foreground` (1 %) of its footprint on
//   the mask is foreground, or when it intersects a tumour polygon.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/wsi_annotations.h"

namespace ipsnet {
namespace data {

class WsiSlide;

// ---- the foreground rule -----------------------------------------------------
/// gray[i] from rgb (n, 3).
std::vector<uint8_t> foreground_gray(const uint8_t* rgb, int64_t n);
/// Otsu's threshold of integer values (the value t maximising the
/// between-class variance of {v <= t} and {v > t}; the only value when all
/// are equal).
int otsu_threshold(const uint8_t* gray, int64_t n);
/// mask (h, w) of 0/1: gray > t extended by the 4-connected components of
/// gray > 0.25 t touching it.
std::vector<uint8_t> foreground_mask(const uint8_t* gray, int64_t h, int64_t w, int t);

// ---- tiles of one slide ------------------------------------------------------
/// How tiles are cut: exactly one of size-at-level, micrometres, magnification.
struct TileOptions {
  int level = 0;              // the level tiles are read from (pixel and micrometre modes)
  int64_t tile_size = 256;    // pixels at `level` (or at `magnification`)
  double tile_um = 0;         // > 0: tile side in micrometres (read at `level`)
  double magnification = 0;   // > 0: tile_size pixels at this magnification (10x = 1 um/px)
  int mask_level = -1;        // -1: the coarsest level whose downsample is at most 32
  double min_foreground = 0.01;
};

struct Tile {
  int64_t x = 0, y = 0;  // top-left, level-0 pixels
  float foreground = 0;  // fraction of the footprint that is foreground
  bool tumour = false;   // intersects a tumour polygon
};

/// The tiles of one slide and how to read them.
struct SlideTiles {
  std::string slide_path, name;
  int64_t label = -1;         // -1: unknown
  int level = 0;              // read level
  int64_t read_size = 0;      // tile side in pixels at `level`
  int64_t out_size = 0;       // tile side handed to the encoder (resized from read_size when different)
  double extent0 = 0;         // tile side in level-0 pixels
  double mpp = 0;             // level-0 microns per pixel (0: unknown)
  int mask_level = 0;
  int threshold = 0;          // Otsu's threshold
  std::vector<Tile> tiles;
};

/// Cuts the slide's tiles by the foreground rule; tumour polygons (exclusion
/// groups ignored) keep tiles they intersect. mask_rgb/mask_w/mask_h, when
/// given, receive the mask level's pixels (for the thumbnail).
SlideTiles cut_tiles(const WsiSlide& slide, const std::vector<Polygon>& polygons, const TileOptions& o,
                     std::vector<uint8_t>* mask_rgb = nullptr, int64_t* mask_w = nullptr,
                     int64_t* mask_h = nullptr);

/// The slide's tiles at given level-0 top-left coordinates xy (n x 2), cut at
/// `level` with side `size` pixels there (CLAM's coordinates files: its
/// patch_level and patch_size). Foreground fractions, the Otsu threshold and
/// tumour flags are computed as cut_tiles does, but every tile is kept.
/// Throws one line naming `source` when the level is not one of the slide's
/// or a top-left corner lies outside the slide (tiles may run over its edge,
/// as CLAM's padded ones do). mask_rgb/mask_w/mask_h as cut_tiles.
SlideTiles tiles_from_coords(const WsiSlide& slide, const std::vector<Polygon>& polygons, const int64_t* xy,
                             int64_t n, int64_t level, int64_t size, int mask_level, const std::string& source,
                             std::vector<uint8_t>* mask_rgb = nullptr, int64_t* mask_w = nullptr,
                             int64_t* mask_h = nullptr);

/// RGB (h, w, 3) thumbnail of the mask-level image at most max_side pixels on
/// its larger side, kept tiles outlined (green; red when on a tumour polygon),
/// tumour polygons drawn in blue. Returns the pixels and sets w, h.
std::vector<uint8_t> tile_thumbnail(const std::vector<uint8_t>& rgb, int64_t w, int64_t h, double downsample,
                                    const SlideTiles& t, const std::vector<Polygon>& polygons, int64_t max_side,
                                    int64_t* out_w, int64_t* out_h);

/// ipsnet's tile file (.tiles): a header, the tiles, the slide path and a
/// CRC-32 of everything before it; written atomically.
void write_tiles_file(const std::string& path, const SlideTiles& t);
/// Throws one line naming the file on a bad magic, truncation or checksum.
SlideTiles read_tiles_file(const std::string& path);

/// dst (3, crop, crop) float: tile `tile` of `t` read from the slide at its
/// level (alpha removed), resized to out_size when the read size differs
/// (bilinear), centre-cropped to `crop` as torchvision's CenterCrop (crop 0:
/// no crop, dst is (3, out_size, out_size)), scaled to [0, 1] and, for
/// normalize "imagenet", standardised with ImageNet's mean and std.
void read_tile(const WsiSlide& slide, const SlideTiles& t, const Tile& tile, int64_t crop,
               const std::string& normalize, float* dst);

// ---- slide lists ---------------------------------------------------------------
struct SlideEntry {
  std::string path, name;  // name: the file name without extension
  std::string split;       // train | test | "" (unknown)
  int64_t label = -1;      // 1 tumour, 0 normal, -1 unknown
  std::string annotation;  // ASAP XML path or ""
};
/// True for the file extensions OpenSlide reads.
bool is_slide_file(const std::string& path);
/// The slides of `input`: a CAMELYON16 root (training/normal, training/tumor,
/// training/lesion_annotations, testing/images, testing/lesion_annotations;
/// positive when an annotation file exists), a directory of slides, or one
/// slide file. labels_csv (optional): `slide,label[,split]` rows overriding
/// or giving labels (a header row is allowed); annotations_dir (optional):
/// NAME.xml per slide. Throws one line on a malformed CSV or a slide it names
/// that is missing.
std::vector<SlideEntry> find_slides(const std::string& input, const std::string& labels_csv,
                                    const std::string& annotations_dir);

}  // namespace data
}  // namespace ipsnet

// Synthetic whole-slide images for tests and demos, with no download: small
// pyramidal tiled TIFF slides (levels 0..L-1, each a tiled RGB directory, the
// layout OpenSlide's generic-tiff reader opens) showing tissue-like stained
// blobs on a white background, with textured "tumour" regions on positive
// slides annotated as ASAP XML polygons, written in CAMELYON16's layout:
//
//   OUT/training/normal/normal_001.tif ...
//   OUT/training/tumor/tumor_001.tif ...
//   OUT/training/lesion_annotations/tumor_001.xml ...
//   OUT/testing/images/test_001.tif ...
//   OUT/testing/lesion_annotations/test_002.xml ...   (positive test slides only)
//
// Needs libtiff (built with IPSNET_HAVE_OPENSLIDE).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/wsi_annotations.h"

namespace ipsnet {
namespace data {

struct SlideGenOptions {
  int64_t n_normal = 4;       // training/normal
  int64_t n_tumor = 4;        // training/tumor (+ annotations)
  int64_t n_test_normal = 2;  // testing/images without annotations
  int64_t n_test_tumor = 2;   // testing/images with annotations
  int64_t n_blank = 0;        // extra training/normal slides with no tissue at all (blank_NNN.tif)
  int64_t size = 4096;        // level-0 width and height
  int levels = 4;             // pyramid levels, each half the previous
  int64_t tile = 256;         // TIFF tile side
  double mpp = 0.25;          // microns per pixel at level 0 (resolution tags; 0: none written)
  std::string compression = "jpeg";  // jpeg | deflate
  int jpeg_quality = 90;
  uint64_t seed = 0;
};

/// Level-0 RGB pixels (size, size, 3) of one slide and its tumour polygons
/// (empty when !tumour). blank: white background only.
void render_slide(int64_t size, bool tumour, bool blank, uint64_t seed, std::vector<uint8_t>* rgb,
                  std::vector<Polygon>* polygons);

/// Writes rgb (h, w, 3) as a pyramidal tiled TIFF with `levels` levels (2x box
/// downsampling), tiles of o.tile, o.compression, resolution tags from o.mpp.
void write_pyramidal_tiff(const std::string& path, const std::vector<uint8_t>& rgb, int64_t w, int64_t h,
                          const SlideGenOptions& o);

/// One generated slide.
struct GeneratedSlide {
  std::string path;        // relative to the output directory
  bool tumour = false;
  int64_t n_polygons = 0;
};

/// Generates the whole CAMELYON16-layout directory `out` (built under a
/// temporary name, renamed into place; an existing `out` needs `force`).
/// progress: print one line per slide.
std::vector<GeneratedSlide> generate_slides(const std::string& out, const SlideGenOptions& o, bool force,
                                            bool progress);

}  // namespace data
}  // namespace ipsnet

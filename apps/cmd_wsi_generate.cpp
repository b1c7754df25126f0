// `ipsnet generate-slides OUT`: synthetic pyramidal TIFF slides with ASAP XML
// tumour polygons in CAMELYON16's layout (data/slide_generator.h), for tests
// and the README's whole-slide demo without a download.
#include <cstdio>
#include <string>
#include <vector>

#include "apps/args.h"
#include "apps/command.h"
#include "data/slide_generator.h"
#include "engine/common/error.h"

namespace ipsnet {
namespace app {
namespace {

int run_generate_slides(const std::vector<std::string>& args) {
  ArgParser p("generate-slides",
              "Generate small synthetic whole-slide images (pyramidal tiled TIFF, tissue blobs, textured tumour "
              "regions with ASAP XML polygons) in the CAMELYON16 layout.");
  p.add_option("n-normal", "4", "training/normal slides");
  p.add_option("n-tumor", "4", "training/tumor slides (each with an annotation file)");
  p.add_option("n-test-normal", "2", "negative slides in testing/images");
  p.add_option("n-test-tumor", "2", "positive slides in testing/images (annotations in testing/lesion_annotations)");
  p.add_option("n-blank", "0", "extra training/normal slides without tissue (blank_NNN.tif: zero tiles)");
  p.add_option("size", "4096", "level-0 width and height in pixels");
  p.add_option("levels", "4", "pyramid levels (each half the previous)");
  p.add_option("tile", "256", "TIFF tile side (a multiple of 16)");
  p.add_option("mpp", "0.25", "microns per pixel at level 0, written as resolution tags (0: none)");
  p.add_option("compression", "jpeg", "jpeg | deflate");
  p.add_option("seed", "0", "random seed (same seed, same slides)");
  p.add_flag("force", "replace an existing output directory");
  p.add_flag("quiet", "no line per slide");
  p.add_positional("OUT", "output directory (CAMELYON16 layout)");
  p.set_epilog("example: ipsnet generate-slides --size 2048 --n-normal 6 --n-tumor 6 /tmp/camelyon-synth");
  if (!p.parse(args)) return 0;
  data::SlideGenOptions o;
  o.n_normal = p.get_int64("n-normal");
  o.n_tumor = p.get_int64("n-tumor");
  o.n_test_normal = p.get_int64("n-test-normal");
  o.n_test_tumor = p.get_int64("n-test-tumor");
  o.n_blank = p.get_int64("n-blank");
  o.size = p.get_int64("size");
  o.levels = static_cast<int>(p.get_int64("levels"));
  o.tile = p.get_int64("tile");
  o.mpp = p.get_double("mpp");
  o.compression = p.get_string("compression");
  o.seed = static_cast<uint64_t>(p.get_int64("seed"));
  IPSNET_CHECK(o.compression == "jpeg" || o.compression == "deflate", "--compression ", o.compression,
               ": expected jpeg or deflate");
  IPSNET_CHECK(o.levels >= 1 && o.levels <= 12, "--levels ", o.levels, ": expected 1 to 12");
  IPSNET_CHECK(o.tile >= 16 && o.tile % 16 == 0, "--tile ", o.tile, ": expected a positive multiple of 16");
  IPSNET_CHECK(o.mpp >= 0, "--mpp ", o.mpp, ": expected a positive number (or 0: no resolution tags)");
  auto made = data::generate_slides(p.positional(0), o, p.get_flag("force"), !p.get_flag("quiet"));
  int64_t pos = 0;
  for (const auto& s : made) pos += s.tumour;
  std::printf("generate-slides: %zu slides (%lld with tumour), %lldx%lld at level 0, %d levels, %.3f um/px -> %s\n",
              made.size(), static_cast<long long>(pos), static_cast<long long>(o.size),
              static_cast<long long>(o.size), o.levels, o.mpp, p.positional(0).c_str());
  return 0;
}

CommandRegistrar reg("generate-slides", "synthetic whole-slide images in the CAMELYON16 layout (libtiff)",
                     run_generate_slides);

}  // namespace
}  // namespace app
}  // namespace ipsnet

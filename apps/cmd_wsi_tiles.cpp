// `ipsnet wsi-tiles SLIDES OUT`: the tissue tiles of whole-slide images by the
// IPS reference's foreground rule (data/wsi_tiles.h), one tile file and one
// thumbnail per slide, and the slide list with labels and splits.
//
//   OUT/slides.csv            name,split,label,tiles,slide
//   OUT/tiles/NAME.tiles      ipsnet's tile file (level-0 coordinates, read level and size)
//   OUT/thumbnails/NAME.png   the mask level's image, kept tiles outlined
//   OUT/patches/NAME.h5       with --clam-coords: CLAM's coordinates file
//
// With --from-clam DIR the tiles are CLAM's, read from DIR/patches/NAME.h5
// (coords, patch_level, patch_size), instead of the foreground rule.
//
// OUT is built under a temporary name and renamed into place when every
// slide is done.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "apps/args.h"
#include "apps/command.h"
#include "data/bag_hdf5.h"
#include "data/png_writer.h"
#include "data/wsi_slide.h"
#include "data/wsi_tiles.h"
#include "engine/common/error.h"
#include "engine/common/files.h"

namespace ipsnet {
namespace app {
namespace {

int run_wsi_tiles(const std::vector<std::string>& args) {
  ArgParser p("wsi-tiles",
              "Find the tissue tiles of whole-slide images (Otsu on R + B - (R+G+B)/1.5, hysteresis at 0.25 t, "
              ">= 1 % foreground or touching a tumour polygon) and write their coordinates and a thumbnail per "
              "slide.");
  p.add_positional("SLIDES", "a CAMELYON16 root (training/, testing/), a directory of slides, or one slide file");
  p.add_positional("OUT", "output directory");
  p.add_option("labels", "", "CSV of slide,label[,split] (label 0/1 or normal/tumor; split train/test)");
  p.add_option("annotations", "", "directory of ASAP XML files NAME.xml (default: CAMELYON16's lesion_annotations)");
  p.add_option("level", "0", "pyramid level the tiles are read at (pixel and micrometre sizes)");
  p.add_option("tile-size", "256", "tile side in pixels at --level (or at --magnification)");
  p.add_option("tile-um", "0", "tile side in micrometres instead (converted per slide from its microns per pixel)");
  p.add_option("magnification", "0", "tile-size pixels at this magnification instead (10x = 1 um/px; per slide "
               "from its microns per pixel)");
  p.add_option("mask-level", "-1", "level of the foreground mask (-1: the coarsest with downsample <= 32)");
  p.add_option("min-foreground", "0.01", "fraction of a tile's pixels that must be foreground");
  p.add_option("thumbnail-size", "1024", "larger side of the thumbnails in pixels");
  p.add_flag("clam-coords", "also write CLAM's coordinates files OUT/patches/NAME.h5 (coords, patch_level, "
             "patch_size; needs HDF5)");
  p.add_option("from-clam", "", "keep CLAM's tiles: read DIR/patches/NAME.h5 (coords, patch_level, patch_size) per "
               "slide instead of the foreground rule (--level, --tile-size, --tile-um, --magnification and "
               "--min-foreground do not apply; needs HDF5)");
  p.add_flag("force", "replace an existing output directory");
  p.add_flag("quiet", "no line per slide");
  p.set_epilog(
      "examples: ipsnet wsi-tiles /data/CAMELYON16 /data/c16-tiles\n"
      "          ipsnet wsi-tiles --tile-um 128 --labels labels.csv /data/slides /data/tiles\n"
      "          ipsnet wsi-tiles --from-clam /data/clam-out /data/CAMELYON16 /data/c16-clam\n"
      "          ipsnet wsi-tiles --magnification 20 --tile-size 256 /data/CAMELYON16 /data/c16-20x");
  if (!p.parse(args)) return 0;
  data::TileOptions o;
  o.level = static_cast<int>(p.get_int64("level"));
  o.tile_size = p.get_int64("tile-size");
  o.tile_um = p.get_double("tile-um");
  o.magnification = p.get_double("magnification");
  o.mask_level = static_cast<int>(p.get_int64("mask-level"));
  o.min_foreground = p.get_double("min-foreground");
  const int64_t thumb = p.get_int64("thumbnail-size");
  IPSNET_CHECK(o.level >= 0, "--level ", o.level, ": expected a level >= 0");
  IPSNET_CHECK(o.tile_size >= 1, "--tile-size ", o.tile_size, ": expected a positive number of pixels");
  IPSNET_CHECK(o.tile_um >= 0 && o.magnification >= 0, "--tile-um and --magnification must not be negative");
  IPSNET_CHECK(!(o.tile_um > 0 && o.magnification > 0), "give --tile-um or --magnification, not both");
  IPSNET_CHECK(o.mask_level >= -1, "--mask-level ", o.mask_level, ": expected -1 or a level >= 0");
  IPSNET_CHECK(o.min_foreground >= 0 && o.min_foreground <= 1, "--min-foreground ", o.min_foreground,
               ": expected a fraction in [0, 1]");
  IPSNET_CHECK(thumb >= 16, "--thumbnail-size ", thumb, ": expected at least 16");
  IPSNET_CHECK(data::have_openslide(), "this ipsnet was built without OpenSlide (IPSNET_OPENSLIDE; apt-get install "
               "libopenslide-dev libtiff-dev and reconfigure)");

  const bool clam = p.get_flag("clam-coords");
  IPSNET_CHECK(!clam || data::have_hdf5(), "--clam-coords: this ipsnet was built without HDF5 (IPSNET_HDF5; "
               "apt-get install libhdf5-dev and reconfigure)");
  const std::string from_clam = p.get_string("from-clam");
  IPSNET_CHECK(from_clam.empty() || data::have_hdf5(), "--from-clam: this ipsnet was built without HDF5 "
               "(IPSNET_HDF5; apt-get install libhdf5-dev and reconfigure)");
  IPSNET_CHECK(from_clam.empty() || std::filesystem::is_directory(from_clam + "/patches"), "--from-clam '",
               from_clam, "' has no patches/ directory (expected CLAM's output: patches/NAME.h5 per slide)");
  auto slides = data::find_slides(p.positional(0), p.get_string("labels"), p.get_string("annotations"));
  std::set<std::string> names;
  for (const auto& s : slides)
    IPSNET_CHECK(names.insert(s.name).second, "two slides are named '", s.name, "' (", s.path,
                 "): tile files are named by slide");
  const bool quiet = p.get_flag("quiet");
  TempDirectory td(p.positional(1), p.get_flag("force"));
  std::filesystem::create_directories(td.path() + "/tiles");
  std::filesystem::create_directories(td.path() + "/thumbnails");
  if (clam) std::filesystem::create_directories(td.path() + "/patches");
  std::string csv = "name,split,label,tiles,slide\n";
  int64_t kept_slides = 0, skipped = 0, total_tiles = 0;
  for (size_t k = 0; k < slides.size(); ++k) {
    const auto& e = slides[k];
    auto slide = data::WsiSlide::open(e.path);
    std::vector<data::Polygon> polys;
    if (!e.annotation.empty()) polys = data::read_asap_xml(e.annotation);
    std::vector<uint8_t> mask_rgb;
    int64_t mw = 0, mh = 0;
    data::SlideTiles t;
    if (from_clam.empty()) {
      t = data::cut_tiles(*slide, polys, o, &mask_rgb, &mw, &mh);
    } else {
      const std::string cp = from_clam + "/patches/" + e.name + ".h5";
      data::ClamCoords c = data::read_clam_coords(cp);
      t = data::tiles_from_coords(*slide, polys, c.xy.data(), static_cast<int64_t>(c.xy.size() / 2), c.patch_level,
                                  c.patch_size, o.mask_level, str_cat("CLAM's coordinates file '", cp, "'"),
                                  &mask_rgb, &mw, &mh);
    }
    t.name = e.name;
    t.label = e.label;
    if (t.tiles.empty()) {
      ++skipped;
      if (from_clam.empty())
        std::printf("wsi-tiles: [%zu/%zu] %s: no tissue found (0 tiles, Otsu threshold %d), skipped\n", k + 1,
                    slides.size(), e.name.c_str(), t.threshold);
      else
        std::printf("wsi-tiles: [%zu/%zu] %s: CLAM's coordinates file holds 0 tiles, skipped\n", k + 1,
                    slides.size(), e.name.c_str());
      std::fflush(stdout);
      continue;
    }
    data::write_tiles_file(td.path() + "/tiles/" + e.name + ".tiles", t);
    if (clam) {
      // CLAM's patch_size is the tile side at its patch_level.
      std::vector<int64_t> xy(t.tiles.size() * 2);
      for (size_t i = 0; i < t.tiles.size(); ++i) xy[2 * i] = t.tiles[i].x, xy[2 * i + 1] = t.tiles[i].y;
      data::write_clam_coords(td.path() + "/patches/" + e.name + ".h5", xy.data(),
                              static_cast<int64_t>(t.tiles.size()), t.level, t.read_size);
    }
    int64_t tw = 0, th = 0;
    auto img = data::tile_thumbnail(mask_rgb, mw, mh, slide->downsample(t.mask_level), t, polys, thumb, &tw, &th);
    data::write_png(td.path() + "/thumbnails/" + e.name + ".png", tw, th, 3, img);
    int64_t tum = 0;
    for (const auto& tile : t.tiles) tum += tile.tumour;
    csv += str_cat(e.name, ",", e.split, ",", e.label, ",", t.tiles.size(), ",", std::filesystem::absolute(e.path).string(), "\n");
    ++kept_slides;
    total_tiles += static_cast<int64_t>(t.tiles.size());
    if (!quiet)
      std::printf("wsi-tiles: [%zu/%zu] %s (%s, label %lld): %zu tiles of %lld px at level %d (%.1f level-0 px)%s, "
                  "Otsu %d at level %d\n",
                  k + 1, slides.size(), e.name.c_str(), e.split.empty() ? "no split" : e.split.c_str(),
                  static_cast<long long>(e.label), t.tiles.size(), static_cast<long long>(t.read_size), t.level,
                  t.extent0, polys.empty() ? "" : str_cat(", ", tum, " on tumour polygons").c_str(), t.threshold,
                  t.mask_level);
    std::fflush(stdout);
  }
  IPSNET_CHECK(kept_slides > 0, "none of the ", slides.size(), " slides has tissue tiles; nothing written");
  write_file_atomic(td.path() + "/slides.csv", csv);
  td.commit();
  std::printf("wsi-tiles: %lld slides, %lld tiles -> %s", static_cast<long long>(kept_slides),
              static_cast<long long>(total_tiles), p.positional(1).c_str());
  if (skipped) std::printf(" (%lld slides without tissue skipped)", static_cast<long long>(skipped));
  std::printf("\n");
  return 0;
}

CommandRegistrar reg("wsi-tiles", "tissue tiles of whole-slide images (foreground rule, thumbnails)", run_wsi_tiles);

}  // namespace
}  // namespace app
}  // namespace ipsnet

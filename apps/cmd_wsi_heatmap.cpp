// `ipsnet wsi-heatmap`: a checkpoint trained on feature bags (`is_image:
// false`) shows where it looks on whole slides: the IPS score of every tile
// drawn over the slide's thumbnail, the M selected tiles outlined, and the
// top-k tiles exported as PNGs named by their coordinates and score. Memory
// is bounded by the thumbnail and the tiles: the thumbnail is read from the
// pyramid level nearest its size, the tiles one at a time.
//
//   OUT/NAME_heatmap.png
//   OUT/NAME_top/01_x12288_y34560_s0.012345.png ...
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "apps/args.h"
#include "apps/command.h"
#include "data/bag_source.h"
#include "data/png_writer.h"
#include "data/wsi_slide.h"
#include "data/wsi_tiles.h"
#include "engine/common/error.h"
#include "engine/engine.h"
#include "train/trainer.h"

namespace ipsnet {
namespace app {
namespace {

// Blue (low) -> yellow -> red (high) for s in [0, 1].
void heat_colour(double s, double rgb[3]) {
  s = std::min(1.0, std::max(0.0, s));
  if (s < 0.5) {
    double t = s / 0.5;
    rgb[0] = 255 * t, rgb[1] = 255 * t, rgb[2] = 255 * (1 - t);
  } else {
    double t = (s - 0.5) / 0.5;
    rgb[0] = 255, rgb[1] = 255 * (1 - t), rgb[2] = 0;
  }
}

void outline(std::vector<uint8_t>& img, int64_t w, int64_t h, int64_t x0, int64_t y0, int64_t x1, int64_t y1,
             const uint8_t c[3]) {
  for (int64_t x = x0; x <= x1; ++x)
    for (int64_t y : {y0, y1})
      if (x >= 0 && x < w && y >= 0 && y < h) std::copy_n(c, 3, &img[(y * w + x) * 3]);
  for (int64_t y = y0; y <= y1; ++y)
    for (int64_t x : {x0, x1})
      if (x >= 0 && x < w && y >= 0 && y < h) std::copy_n(c, 3, &img[(y * w + x) * 3]);
}

int run_wsi_heatmap(const std::vector<std::string>& args) {
  ArgParser p("wsi-heatmap",
              "Draw a bag-trained checkpoint's IPS tile scores over whole-slide thumbnails, outline the selected "
              "tiles and export the top-k tiles.");
  p.add_positional("BAGS", "feature bags of `ipsnet extract-features` (the data the checkpoint scores)");
  p.add_positional("TILES", "the `ipsnet wsi-tiles` output the bags were made from (slides, tile geometry)");
  p.add_positional("OUT", "output directory");
  p.add_option("checkpoint", "", "checkpoint of `ipsnet train` on bags (required)");
  p.add_option("split", "test", "test | train");
  p.add_option("slides", "", "comma-separated slide names (default: every slide of the split)");
  p.add_option("top-k", "8", "tiles exported as PNGs, highest scores first");
  p.add_option("thumbnail-size", "2048", "larger side of the heat map in pixels");
  p.add_option("device", "", "auto | cpu | cuda[:N] (default: the checkpoint's)");
  p.set_epilog("example: ipsnet wsi-heatmap --checkpoint runs/c16/checkpoint_best.safetensors data/c16-bags "
               "data/c16-tiles heatmaps");
  if (!p.parse(args)) return 0;
  IPSNET_CHECK(p.is_set("checkpoint"), "wsi-heatmap: --checkpoint is required");
  const std::string split = p.get_string("split");
  IPSNET_CHECK(split == "test" || split == "train", "--split ", split, ": expected test or train");
  const int64_t top_k = p.get_int64("top-k"), thumb = p.get_int64("thumbnail-size");
  IPSNET_CHECK(top_k >= 0, "--top-k ", top_k, ": expected 0 or more");
  IPSNET_CHECK(thumb >= 16 && thumb <= 65536, "--thumbnail-size ", thumb, ": expected 16 to 65536");
  IPSNET_CHECK(data::have_openslide(), "this ipsnet was built without OpenSlide (IPSNET_OPENSLIDE)");
  const std::string bags_dir = p.positional(0), tiles_dir = p.positional(1), out = p.positional(2);
  std::vector<std::string> ov = {"data_dir=" + bags_dir, "eval_split=" + split};
  if (p.is_set("device")) ov.push_back("device=" + p.get_string("device"));
  auto t = train::Trainer::from_checkpoint(p.get_string("checkpoint"), ov, true);
  const auto* src = dynamic_cast<const data::BagSource*>(&t->source(split));
  IPSNET_CHECK(src != nullptr, "wsi-heatmap: '", bags_dir, "' is not a directory of feature bags (the ",
               t->source(split).kind(), " data source)");
  std::map<std::string, int64_t> by_name;
  for (int64_t i = 0; i < src->size(); ++i) by_name[src->bag(i).info().name] = i;
  std::vector<int64_t> ids;
  if (p.get_string("slides").empty()) {
    for (int64_t i = 0; i < src->size(); ++i) ids.push_back(i);
  } else {
    std::stringstream ss(p.get_string("slides"));
    for (std::string name; std::getline(ss, name, ',');) {
      auto it = by_name.find(name);
      IPSNET_CHECK(it != by_name.end(), "wsi-heatmap: no slide '", name, "' in the ", split, " split of '", bags_dir,
                   "'");
      ids.push_back(it->second);
    }
  }
  std::filesystem::create_directories(out);
  for (int64_t id : ids) {
    const data::BagReader& bag = src->bag(id);
    const std::string& name = bag.info().name;
    data::SlideTiles tiles = data::read_tiles_file(tiles_dir + "/tiles/" + name + ".tiles");
    const int64_t n = bag.info().n;
    IPSNET_CHECK(static_cast<int64_t>(tiles.tiles.size()) == n, "wsi-heatmap: the bag of ", name, " holds ", n,
                 " tiles but its tile file ", tiles.tiles.size(), ": use the TILES the bags were extracted from");
    for (int64_t i = 0; i < n; ++i)
      IPSNET_CHECK(tiles.tiles[i].x == bag.coords()[2 * i] && tiles.tiles[i].y == bag.coords()[2 * i + 1],
                   "wsi-heatmap: tile ", i, " of ", name, " is at another position in the bag than in its tile file");
    train::Attention a = t->attend(split, {id}, true);
    IPSNET_CHECK(a.all_scores.defined(), "wsi-heatmap: the method gives no per-tile scores");
    std::vector<float> scores = a.all_scores.to_vector<float>();
    std::vector<int64_t> sel = a.idx.to_vector<int64_t>();

    // The thumbnail from the level nearest its size (memory bounded by it).
    auto slide = data::WsiSlide::open(tiles.slide_path);
    const auto [w0, h0] = slide->dimensions(0);
    const double want = static_cast<double>(std::max(w0, h0)) / thumb;
    const int level = slide->best_level_for_downsample(std::max(1.0, want));
    const auto [lw, lh] = slide->dimensions(level);
    const double lds = slide->downsample(level);
    const int64_t k = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(std::max(lw, lh) / static_cast<double>(thumb))));
    const int64_t tw = std::max<int64_t>(1, lw / k), th = std::max<int64_t>(1, lh / k);
    std::vector<uint8_t> img(static_cast<size_t>(tw * th * 3));
    {
      std::vector<uint8_t> row(static_cast<size_t>(lw * k * 3));
      for (int64_t y = 0; y < th; ++y) {
        slide->read_region(0, static_cast<int64_t>(std::llround(y * k * lds)), level, lw, k, row.data());
        for (int64_t x = 0; x < tw; ++x)
          for (int c = 0; c < 3; ++c) {
            int64_t s = 0;
            for (int64_t dy = 0; dy < k; ++dy)
              for (int64_t dx = 0; dx < k; ++dx) s += row[(dy * lw + x * k + dx) * 3 + c];
            img[(y * tw + x) * 3 + c] = static_cast<uint8_t>(s / (k * k));
          }
      }
    }
    // Scores min-max normalised over the slide's tiles, blended over the tissue.
    const float lo = *std::min_element(scores.begin(), scores.end());
    const float hi = *std::max_element(scores.begin(), scores.end());
    const double f = 1.0 / (lds * k);  // level-0 pixels -> thumbnail pixels
    auto rect = [&](const data::Tile& tile, int64_t* x0, int64_t* y0, int64_t* x1, int64_t* y1) {
      *x0 = static_cast<int64_t>(std::floor(tile.x * f));
      *y0 = static_cast<int64_t>(std::floor(tile.y * f));
      *x1 = std::max(*x0, static_cast<int64_t>(std::ceil((tile.x + tiles.extent0) * f)) - 1);
      *y1 = std::max(*y0, static_cast<int64_t>(std::ceil((tile.y + tiles.extent0) * f)) - 1);
    };
    for (int64_t i = 0; i < n; ++i) {
      double c[3];
      heat_colour(hi > lo ? (scores[i] - lo) / (hi - lo) : 0.5, c);
      int64_t x0, y0, x1, y1;
      rect(tiles.tiles[i], &x0, &y0, &x1, &y1);
      for (int64_t y = std::max<int64_t>(0, y0); y <= std::min(th - 1, y1); ++y)
        for (int64_t x = std::max<int64_t>(0, x0); x <= std::min(tw - 1, x1); ++x)
          for (int ch = 0; ch < 3; ++ch) {
            uint8_t& v = img[(y * tw + x) * 3 + ch];
            v = static_cast<uint8_t>(std::lround(0.45 * v + 0.55 * c[ch]));
          }
    }
    const uint8_t black[3] = {0, 0, 0};
    for (int64_t i : sel) {
      int64_t x0, y0, x1, y1;
      rect(tiles.tiles[i], &x0, &y0, &x1, &y1);
      outline(img, tw, th, x0, y0, x1, y1, black);
    }
    const std::string map_path = out + "/" + name + "_heatmap.png";
    data::write_png(map_path, tw, th, 3, img);

    // The top-k tiles, one at a time, at their read size.
    std::vector<int64_t> order(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a2, int64_t b2) { return scores[a2] > scores[b2]; });
    const int64_t kk = std::min<int64_t>(top_k, n);
    if (kk > 0) std::filesystem::create_directories(out + "/" + name + "_top");
    std::vector<uint8_t> tile_px(static_cast<size_t>(tiles.read_size * tiles.read_size * 3));
    for (int64_t r = 0; r < kk; ++r) {
      const data::Tile& tile = tiles.tiles[order[r]];
      slide->read_region(tile.x, tile.y, tiles.level, tiles.read_size, tiles.read_size, tile_px.data());
      char fname[128];
      std::snprintf(fname, sizeof fname, "%02lld_x%lld_y%lld_s%.6g.png", static_cast<long long>(r + 1),
                    static_cast<long long>(tile.x), static_cast<long long>(tile.y), scores[order[r]]);
      data::write_png(out + "/" + name + "_top/" + fname, tiles.read_size, tiles.read_size, 3, tile_px);
    }
    int64_t tum_sel = 0;
    for (int64_t i : sel) tum_sel += tiles.tiles[i].tumour;
    std::printf("wsi-heatmap: %s (label %lld): %lld tiles, %zu selected (%lld on tumour polygons) -> %s\n",
                name.c_str(), static_cast<long long>(bag.info().label), static_cast<long long>(n), sel.size(),
                static_cast<long long>(tum_sel), map_path.c_str());
  }
  return 0;
}

CommandRegistrar reg("wsi-heatmap", "a bag-trained checkpoint's tile scores over whole-slide thumbnails",
                     run_wsi_heatmap);

}  // namespace
}  // namespace app
}  // namespace ipsnet

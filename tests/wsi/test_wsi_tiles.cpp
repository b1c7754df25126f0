// The tissue-tile rule against an independent NumPy re-implementation
// (tests/fixtures/make_wsi_foreground.py), the tile grid on generated slides,
// the tile file, the slide lists and `ipsnet wsi-tiles` with its errors.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "data/npy.h"
#include "data/slide_generator.h"
#include "data/wsi_slide.h"
#include "data/wsi_tiles.h"
#include "engine/common/error.h"
#include "wsi_test_util.h"

using namespace ipsnet;
using namespace ipsnet::data;
using ipsnet::testing_wsi::run_ipsnet;
using ipsnet::testing_wsi::WsiTempDir;

namespace {
const std::string kFix = std::string(IPSNET_FIXTURES_DIR) + "/wsi/";

std::vector<uint8_t> npy_u8(const std::string& name, std::vector<int64_t>* shape = nullptr) {
  NpyArray a = read_npy(kFix + name);
  EXPECT_EQ(a.descr, "|u1") << name;
  if (shape) *shape = a.shape;
  return a.bytes;
}

void expect_one_line_error(const std::string& args, const std::string& needle) {
  std::string out;
  EXPECT_NE(run_ipsnet(args, &out), 0) << args;
  EXPECT_NE(out.find(needle), std::string::npos) << args << "\n" << out;
  // Progress lines may come first; the error itself is one line.
  size_t at = out.find("error:");
  ASSERT_NE(at, std::string::npos) << out;
  EXPECT_EQ(out.find('\n', at), out.size() - 1) << out;
}
}  // namespace

TEST(WsiForeground, GrayOtsuAndHysteresisMatchNumpy) {
  std::vector<int64_t> thresholds = read_npy(kFix + "thresholds.npy").as_int64();
  for (int k = 0; k < 3; ++k) {
    std::vector<int64_t> shape;
    auto rgb = npy_u8("foreground_" + std::to_string(k) + "_rgb.npy", &shape);
    ASSERT_EQ(shape.size(), 3u);
    const int64_t h = shape[0], w = shape[1];
    auto want_gray = npy_u8("foreground_" + std::to_string(k) + "_gray.npy");
    auto want_mask = npy_u8("foreground_" + std::to_string(k) + "_mask.npy");
    auto gray = foreground_gray(rgb.data(), h * w);
    EXPECT_TRUE(gray == want_gray) << "scene " << k;
    int t = otsu_threshold(gray.data(), h * w);
    EXPECT_EQ(t, thresholds[k]) << "scene " << k;
    auto mask = foreground_mask(gray.data(), h, w, t);
    int64_t diff = 0, grown = 0;
    for (int64_t i = 0; i < h * w; ++i) {
      diff += mask[i] != want_mask[i];
      grown += mask[i] && gray[i] <= t;
    }
    EXPECT_EQ(diff, 0) << "scene " << k;
    EXPECT_GT(grown, 0) << "scene " << k << ": the fixture should exercise the hysteresis";
  }
  for (int k = 0; k < 4; ++k) {
    std::vector<int64_t> shape;
    auto g = npy_u8("otsu_" + std::to_string(k) + "_gray.npy", &shape);
    EXPECT_EQ(otsu_threshold(g.data(), static_cast<int64_t>(g.size())), thresholds[3 + k]) << "edge case " << k;
  }
}

TEST(WsiForeground, HysteresisKeepsOnlyTouchingComponents) {
  // Row: strong pixel, a faint run touching it, a gap, a faint run alone.
  const uint8_t gray[] = {100, 30, 30, 0, 30, 30};
  auto m = foreground_mask(gray, 1, 6, 90);  // low threshold 22.5
  EXPECT_EQ(std::vector<uint8_t>(m.begin(), m.end()), (std::vector<uint8_t>{1, 1, 1, 0, 0, 0}));
  // Diagonal neighbours are not 4-connected.
  const uint8_t diag[] = {100, 0, 0, 30};
  auto d = foreground_mask(diag, 2, 2, 90);
  EXPECT_EQ(d[3], 0);
}

TEST(WsiTiles, TileFileRoundTripAndDamage) {
  WsiTempDir d;
  SlideTiles t;
  t.slide_path = "/x/slide.tif";
  t.name = "slide";
  t.label = 1;
  t.level = 1;
  t.read_size = 128;
  t.out_size = 224;
  t.extent0 = 256.5;
  t.mpp = 0.243;
  t.mask_level = 5;
  t.threshold = 17;
  for (int i = 0; i < 5; ++i) t.tiles.push_back({i * 256, i * 512, 0.25f * i, i % 2 == 0});
  write_tiles_file(d / "a.tiles", t);
  SlideTiles b = read_tiles_file(d / "a.tiles");
  EXPECT_EQ(b.slide_path, t.slide_path);
  EXPECT_EQ(b.name, t.name);
  EXPECT_EQ(b.label, 1);
  EXPECT_EQ(b.read_size, 128);
  EXPECT_EQ(b.out_size, 224);
  EXPECT_DOUBLE_EQ(b.extent0, 256.5);
  ASSERT_EQ(b.tiles.size(), 5u);
  EXPECT_EQ(b.tiles[3].y, 1536);
  EXPECT_TRUE(b.tiles[4].tumour);
  EXPECT_FLOAT_EQ(b.tiles[2].foreground, 0.5f);
  // Truncated and flipped copies: one line each.
  std::ifstream in(d / "a.tiles", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  {
    std::ofstream o(d / "cut.tiles", std::ios::binary);
    o.write(bytes.data(), static_cast<std::streamsize>(bytes.size() - 10));
  }
  bytes[100] ^= 1;
  {
    std::ofstream o(d / "flip.tiles", std::ios::binary);
    o.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  EXPECT_THROW(
      {
        try {
          read_tiles_file(d / "cut.tiles");
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
          throw;
        }
      },
      Error);
  EXPECT_THROW(
      {
        try {
          read_tiles_file(d / "flip.tiles");
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("checksum"), std::string::npos) << e.what();
          throw;
        }
      },
      Error);
}

TEST(WsiTiles, GridSizesInPixelsMicrometresAndMagnification) {
  if (!have_openslide()) GTEST_SKIP() << "built without OpenSlide (IPSNET_OPENSLIDE): whole-slide tests skipped";
  WsiTempDir d;
  SlideGenOptions o;
  o.levels = 4;
  o.tile = 128;
  o.mpp = 0.25;
  o.compression = "deflate";
  std::vector<uint8_t> rgb;
  std::vector<Polygon> polys;
  render_slide(1024, true, false, 5, &rgb, &polys);
  write_pyramidal_tiff(d / "s.tif", rgb, 1024, 1024, o);
  auto s = WsiSlide::open(d / "s.tif");

  TileOptions px;
  px.tile_size = 64;
  px.level = 1;  // 64 px at level 1 = 128 level-0 px: an 8x8 grid
  SlideTiles a = cut_tiles(*s, polys, px);
  EXPECT_EQ(a.level, 1);
  EXPECT_EQ(a.read_size, 64);
  EXPECT_DOUBLE_EQ(a.extent0, 128);
  EXPECT_EQ(a.mask_level, 3);  // coarsest level with downsample <= 32
  EXPECT_GT(a.tiles.size(), 4u);
  EXPECT_LT(a.tiles.size(), 64u);
  // Every kept tile has >= 1 % foreground or touches a tumour polygon; some touch one.
  int64_t on_tumour = 0;
  for (const Tile& t : a.tiles) {
    EXPECT_EQ(t.x % 128, 0);
    EXPECT_TRUE(t.foreground >= 0.01f || t.tumour);
    on_tumour += t.tumour;
  }
  EXPECT_GT(on_tumour, 0);
  // Without the polygons and with a 100 % foreground rule, fewer tiles are kept.
  TileOptions strict = px;
  strict.min_foreground = 1.0;
  EXPECT_LT(cut_tiles(*s, {}, strict).tiles.size(), a.tiles.size());

  TileOptions um;
  um.tile_um = 32;  // 32 um / 0.25 um/px = 128 level-0 px, read at level 0
  SlideTiles b = cut_tiles(*s, polys, um);
  EXPECT_DOUBLE_EQ(b.extent0, 128);
  EXPECT_EQ(b.read_size, 128);
  EXPECT_EQ(b.tiles.size(), a.tiles.size());

  TileOptions mag;
  mag.magnification = 20;  // 0.5 um/px: 64 px there = 128 level-0 px, read at level 1
  mag.tile_size = 64;
  SlideTiles c = cut_tiles(*s, polys, mag);
  EXPECT_EQ(c.level, 1);
  EXPECT_EQ(c.read_size, 64);
  EXPECT_EQ(c.out_size, 64);
  EXPECT_EQ(c.tiles.size(), a.tiles.size());

  // A slide without microns per pixel: a clear error for micrometres and magnification.
  o.mpp = 0;
  write_pyramidal_tiff(d / "nompp.tif", rgb, 1024, 1024, o);
  auto n = WsiSlide::open(d / "nompp.tif");
  EXPECT_FALSE(n->mpp_x().has_value());
  for (const TileOptions& bad : {um, mag}) {
    try {
      cut_tiles(*n, {}, bad);
      ADD_FAILURE() << "no error without mpp";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("states no microns per pixel"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("nompp.tif"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(cut_tiles(*n, {}, px).tiles.size(), cut_tiles(*s, {}, px).tiles.size());
}

TEST(WsiTiles, CommandOnTheCamelyonLayout) {
  if (!have_openslide()) GTEST_SKIP() << "built without OpenSlide (IPSNET_OPENSLIDE): whole-slide tests skipped";
  WsiTempDir d;
  std::string out;
  ASSERT_EQ(run_ipsnet("generate-slides --size 1024 --levels 4 --n-normal 1 --n-tumor 1 --n-test-normal 1 "
                       "--n-test-tumor 1 --n-blank 1 --quiet " + (d / "cam"), &out), 0) << out;
  ASSERT_EQ(run_ipsnet("wsi-tiles --tile-size 128 " + (d / "cam") + " " + (d / "t"), &out), 0) << out;
  EXPECT_NE(out.find("blank_001: no tissue found (0 tiles"), std::string::npos) << out;
  EXPECT_NE(out.find("4 slides"), std::string::npos) << out;
  EXPECT_NE(out.find("(1 slides without tissue skipped)"), std::string::npos) << out;
  std::ifstream csv(d / "t/slides.csv");
  std::string header, line;
  std::getline(csv, header);
  EXPECT_EQ(header, "name,split,label,tiles,slide");
  std::map<std::string, std::string> rows;
  while (std::getline(csv, line)) rows[line.substr(0, line.find(','))] = line;
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows["tumor_001"].rfind("tumor_001,train,1,", 0), 0u) << rows["tumor_001"];
  EXPECT_EQ(rows["normal_001"].rfind("normal_001,train,0,", 0), 0u) << rows["normal_001"];
  EXPECT_FALSE(rows.count("blank_001"));
  SlideTiles t = read_tiles_file(d / "t/tiles/tumor_001.tiles");
  EXPECT_EQ(t.label, 1);
  EXPECT_EQ(t.read_size, 128);
  int64_t tum = 0;
  for (const Tile& x : t.tiles) tum += x.tumour;
  EXPECT_GT(tum, 0);
  EXPECT_TRUE(std::filesystem::exists(d / "t/thumbnails/tumor_001.png"));
  EXPECT_FALSE(std::filesystem::exists(d / "t/tiles/blank_001.tiles"));

  // Labels and splits from a CSV over a plain directory of slides.
  std::filesystem::create_directories(d / "flat");
  std::filesystem::copy_file(d / "cam/training/tumor/tumor_001.tif", d / "flat/a.tif");
  std::filesystem::copy_file(d / "cam/training/normal/normal_001.tif", d / "flat/b.tif");
  {
    std::ofstream f(d / "labels.csv");
    f << "slide,label,split\na.tif,tumor,test\nb,0,train\n";
  }
  ASSERT_EQ(run_ipsnet("wsi-tiles --quiet --tile-um 32 --labels " + (d / "labels.csv") + " " + (d / "flat") + " " +
                           (d / "t2"), &out), 0) << out;
  std::ifstream csv2(d / "t2/slides.csv");
  std::string all((std::istreambuf_iterator<char>(csv2)), std::istreambuf_iterator<char>());
  EXPECT_NE(all.find("a,test,1,"), std::string::npos) << all;
  EXPECT_NE(all.find("b,train,0,"), std::string::npos) << all;

  // Bad input: one line each, nothing written.
  {
    std::ofstream f(d / "bad.csv");
    f << "a,maybe\n";
  }
  {
    std::ofstream f(d / "missing.csv");
    f << "a,1\nzzz,0\n";
  }
  {
    std::ofstream f(d / "flat/c.tif");
    f << "not a slide";
  }
  expect_one_line_error("wsi-tiles --labels " + (d / "bad.csv") + " " + (d / "flat") + " " + (d / "x"),
                        "label 'maybe' is not one of");
  expect_one_line_error("wsi-tiles --labels " + (d / "missing.csv") + " " + (d / "flat") + " " + (d / "x"),
                        "names the slide 'zzz'");
  expect_one_line_error("wsi-tiles " + (d / "flat") + " " + (d / "x"), "c.tif");
  expect_one_line_error("wsi-tiles --tile-um 10 --magnification 20 " + (d / "flat") + " " + (d / "x"), "not both");
  expect_one_line_error("wsi-tiles " + (d / "cam/training/normal/blank_001.tif") + " " + (d / "x"),
                        "none of the 1 slides has tissue tiles");
  std::filesystem::create_directories(d / "ann");
  {
    std::ofstream f(d / "ann/a.xml");
    f << "<ASAP_Annotations><Annotations><Annotation>";
  }
  std::filesystem::remove(d / "flat/c.tif");
  expect_one_line_error("wsi-tiles --annotations " + (d / "ann") + " " + (d / "flat") + " " + (d / "x"),
                        "a.xml: malformed XML");
  EXPECT_FALSE(std::filesystem::exists(d / "x"));
}

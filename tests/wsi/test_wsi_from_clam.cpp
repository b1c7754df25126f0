// `ipsnet wsi-tiles --from-clam DIR`: CLAM's coordinates files
// (DIR/patches/NAME.h5) give the tiles instead of the foreground rule
// (data::read_clam_coords, data::tiles_from_coords). Skipped, with the
// reason, without HDF5 or OpenSlide.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <vector>

#include "data/bag_file.h"
#include "data/bag_hdf5.h"
#include "data/wsi_slide.h"
#include "data/wsi_tiles.h"
#include "wsi_test_util.h"

using namespace ipsnet;
using namespace ipsnet::data;
using ipsnet::testing_wsi::run_ipsnet;
using ipsnet::testing_wsi::WsiTempDir;

namespace fs = std::filesystem;

namespace {
bool skip_reason(std::string* why) {
  if (!have_hdf5()) *why = "built without HDF5 (IPSNET_HDF5): --from-clam not tested";
  else if (!have_openslide()) *why = "built without OpenSlide (IPSNET_OPENSLIDE): --from-clam not tested";
  else return false;
  return true;
}

// Two 512 x 512 slides with 3 levels (downsamples 1, 2, 4): normal_001, tumor_001.
void make_slides(const WsiTempDir& d) {
  std::string out;
  ASSERT_EQ(run_ipsnet("generate-slides --quiet --size 512 --levels 3 --n-normal 1 --n-tumor 1 --n-test-normal 0 "
                       "--n-test-tumor 0 " + (d / "cam"), &out), 0) << out;
}
}  // namespace

TEST(WsiFromClam, TilesAreExactlyClamsAndEncode) {
  std::string why;
  if (skip_reason(&why)) GTEST_SKIP() << why;
  WsiTempDir d;
  make_slides(d);
  fs::create_directories(d / "clam/patches");
  // patch_level 1, patch_size 32: 64 level-0 pixels; the last tile runs over
  // the slide's edge (CLAM pads), its top-left corner is on the slide.
  const std::vector<int64_t> normal = {0, 0, 64, 128, 256, 192, 480, 448};
  const std::vector<int64_t> tumor = {128, 128, 192, 128, 128, 192};
  write_clam_coords(d / "clam/patches/normal_001.h5", normal.data(), 4, 1, 32);
  write_clam_coords(d / "clam/patches/tumor_001.h5", tumor.data(), 3, 1, 32);
  std::string out;
  ASSERT_EQ(run_ipsnet("wsi-tiles --from-clam " + (d / "clam") + " " + (d / "cam") + " " + (d / "tiles"), &out), 0)
      << out;
  EXPECT_NE(out.find("2 slides, 7 tiles"), std::string::npos) << out;
  for (const auto& [name, xy] : {std::make_pair(std::string("normal_001"), normal), std::make_pair(std::string(
                                     "tumor_001"), tumor)}) {
    SlideTiles t = read_tiles_file(d / ("tiles/tiles/" + name + ".tiles"));
    EXPECT_EQ(t.name, name);
    EXPECT_EQ(t.level, 1);
    EXPECT_EQ(t.read_size, 32);
    EXPECT_EQ(t.out_size, 32);
    EXPECT_DOUBLE_EQ(t.extent0, 64.0);
    ASSERT_EQ(t.tiles.size() * 2, xy.size()) << name;
    for (size_t i = 0; i < t.tiles.size(); ++i) {
      EXPECT_EQ(t.tiles[i].x, xy[2 * i]) << name << " tile " << i;
      EXPECT_EQ(t.tiles[i].y, xy[2 * i + 1]) << name << " tile " << i;
      EXPECT_GE(t.tiles[i].foreground, 0.f);
      EXPECT_LE(t.tiles[i].foreground, 1.f);
    }
    EXPECT_TRUE(fs::is_regular_file(d / ("tiles/thumbnails/" + name + ".png"))) << name;
  }
  // The same tiles the foreground rule would not all keep: the corner tile of
  // the normal slide is background there (a blob slide's corner), kept here.
  SlideTiles corner = read_tiles_file(d / "tiles/tiles/normal_001.tiles");
  EXPECT_LT(corner.tiles[0].foreground, 0.01f);

  // extract-features reads the tile file unchanged: one bag per slide with
  // CLAM's coordinates.
  ASSERT_EQ(run_ipsnet("extract-features --quiet --depth 18 --n-res-blocks 2 --crop 0 --batch 3 --device cpu " +
                       (d / "tiles") + " " + (d / "bags"), &out), 0) << out;
  auto b = BagReader::open(d / "bags/bags/normal_001.bag");
  ASSERT_EQ(b.info().n, 4);
  EXPECT_EQ(b.info().level, 1);
  EXPECT_EQ(b.info().read_size, 32);
  for (size_t k = 0; k < normal.size(); ++k) EXPECT_EQ(b.coords()[k], normal[k]) << k;
  EXPECT_EQ(BagReader::open(d / "bags/bags/tumor_001.bag").info().n, 3);

  // A round trip: --clam-coords writes what --from-clam reads back.
  ASSERT_EQ(run_ipsnet("wsi-tiles --quiet --clam-coords --tile-size 64 " + (d / "cam") + " " + (d / "rule"), &out), 0)
      << out;
  ASSERT_EQ(run_ipsnet("wsi-tiles --quiet --from-clam " + (d / "rule") + " " + (d / "cam") + " " + (d / "back"), &out),
            0) << out;
  for (const char* name : {"normal_001", "tumor_001"}) {
    SlideTiles a = read_tiles_file(d / ("rule/tiles/" + std::string(name) + ".tiles"));
    SlideTiles c = read_tiles_file(d / ("back/tiles/" + std::string(name) + ".tiles"));
    ASSERT_EQ(a.tiles.size(), c.tiles.size()) << name;
    EXPECT_EQ(a.level, c.level);
    EXPECT_EQ(a.read_size, c.read_size);
    EXPECT_EQ(a.threshold, c.threshold);
    for (size_t i = 0; i < a.tiles.size(); ++i) {
      EXPECT_EQ(a.tiles[i].x, c.tiles[i].x);
      EXPECT_EQ(a.tiles[i].y, c.tiles[i].y);
      EXPECT_EQ(a.tiles[i].foreground, c.tiles[i].foreground);
      EXPECT_EQ(a.tiles[i].tumour, c.tiles[i].tumour);
    }
  }
}

TEST(WsiFromClam, BadCoordinatesFilesAreOneLine) {
  std::string why;
  if (skip_reason(&why)) GTEST_SKIP() << why;
  WsiTempDir d;
  make_slides(d);
  std::string out;
  auto expect_error = [&](const std::string& dir, const std::string& needle1, const std::string& needle2) {
    EXPECT_NE(run_ipsnet("wsi-tiles --quiet --from-clam " + dir + " " + (d / "cam") + " " + (d / "x"), &out), 0)
        << dir;
    EXPECT_NE(out.find(needle1), std::string::npos) << needle1 << "\n" << out;
    EXPECT_NE(out.find(needle2), std::string::npos) << needle2 << "\n" << out;
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
    EXPECT_FALSE(fs::exists(d / "x"));
  };
  const std::vector<int64_t> ok = {0, 0, 64, 64};
  const std::vector<int64_t> outside = {0, 0, 512, 64};

  // No patches/ directory at all.
  fs::create_directories(d / "none");
  expect_error(d / "none", "has no patches/ directory", "none");
  // A slide without a coordinates file.
  fs::create_directories(d / "missing/patches");
  write_clam_coords(d / "missing/patches/normal_001.h5", ok.data(), 2, 0, 64);
  expect_error(d / "missing", "patches/tumor_001.h5", "does not exist");
  // A coordinate outside the slide.
  fs::create_directories(d / "outside/patches");
  write_clam_coords(d / "outside/patches/normal_001.h5", outside.data(), 2, 0, 64);
  write_clam_coords(d / "outside/patches/tumor_001.h5", ok.data(), 2, 0, 64);
  expect_error(d / "outside", "patches/normal_001.h5", "coordinate 1 (512, 64) is outside the slide");
  // A patch_level the slide does not have (levels 0 to 2).
  fs::create_directories(d / "level/patches");
  write_clam_coords(d / "level/patches/normal_001.h5", ok.data(), 2, 3, 16);
  write_clam_coords(d / "level/patches/tumor_001.h5", ok.data(), 2, 0, 64);
  expect_error(d / "level", "patches/normal_001.h5", "patch_level 3 is not a level of the slide");
  // Not an HDF5 file.
  fs::create_directories(d / "text/patches");
  std::ofstream(d / "text/patches/normal_001.h5") << "coords\n";
  expect_error(d / "text", "patches/normal_001.h5", "HDF5 cannot open");

  // HDF5 files of the other layouts: CLAM's features file holds `coords`
  // without the attributes; the IPS reference's file has no `coords` at all.
  fs::create_directories(d / "bags/bags");
  BagInfo in;
  in.name = "normal_001";
  in.split = "train";
  in.label = 0;
  in.n = 2;
  in.F = 3;
  in.level = 0;
  in.read_size = in.out_size = 64;
  const std::vector<float> f = {1, 2, 3, 4, 5, 6};
  write_bag(d / "bags/bags/normal_001.bag", in, f.data(), ok.data());
  std::ofstream(d / "bags/bags.csv") << "name,split,label,n,F,file\nnormal_001,train,0,2,3,bags/normal_001.bag\n";
  ASSERT_EQ(run_ipsnet("bags-h5 export --layout clam " + (d / "bags") + " " + (d / "clamh5"), &out), 0) << out;
  ASSERT_EQ(run_ipsnet("bags-h5 export " + (d / "bags") + " " + (d / "ips.h5"), &out), 0) << out;
  fs::create_directories(d / "noattr/patches");
  fs::copy_file(d / "clamh5/h5_files/normal_001.h5", d / "noattr/patches/normal_001.h5");
  expect_error(d / "noattr", "patches/normal_001.h5", "has no readable integer attribute 'patch_level'");
  fs::create_directories(d / "nocoords/patches");
  fs::copy_file(d / "ips.h5", d / "nocoords/patches/normal_001.h5");
  expect_error(d / "nocoords", "patches/normal_001.h5", "has no dataset 'coords'");
}

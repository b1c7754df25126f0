// Feature bags to and from the IPS reference's and CLAM's HDF5 layouts
// (data/bag_hdf5.h, `ipsnet bags-h5`). Skipped, with the reason, without HDF5.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "data/bag_file.h"
#include "data/bag_hdf5.h"
#include "data/wsi_slide.h"
#include "engine/common/error.h"
#include "wsi_test_util.h"

using namespace ipsnet;
using namespace ipsnet::data;
using ipsnet::testing_wsi::run_ipsnet;
using ipsnet::testing_wsi::WsiTempDir;

namespace fs = std::filesystem;

namespace {
void make_bags(const std::string& dir) {
  fs::create_directories(dir + "/bags");
  std::string csv = "name,split,label,n,F,file\n";
  for (int i = 0; i < 3; ++i) {
    BagInfo in;
    in.name = "slide_" + std::to_string(i);
    in.split = i < 2 ? "train" : "test";
    in.label = i % 2;
    in.n = 5 + i;
    in.F = 4;
    in.level = 1;
    in.read_size = in.out_size = 256;
    std::vector<float> f(static_cast<size_t>(in.n * in.F));
    for (size_t k = 0; k < f.size(); ++k) f[k] = 0.25f * static_cast<float>(k) - i;
    std::vector<int64_t> c(static_cast<size_t>(in.n * 2));
    for (size_t k = 0; k < c.size(); ++k) c[k] = 512 * static_cast<int64_t>(k) + i;
    write_bag(dir + "/bags/" + in.name + ".bag", in, f.data(), c.data());
    csv += in.name + "," + in.split + "," + std::to_string(in.label) + "," + std::to_string(in.n) + ",4,bags/" +
           in.name + ".bag\n";
  }
  std::ofstream(dir + "/bags.csv") << csv;
}

void expect_same_bag(const std::string& a, const std::string& b, bool label) {
  auto x = BagReader::open(a), y = BagReader::open(b);
  ASSERT_EQ(x.info().n, y.info().n) << b;
  ASSERT_EQ(x.info().F, y.info().F) << b;
  if (label) {
    EXPECT_EQ(x.info().label, y.info().label) << b;
  }
  for (int64_t k = 0; k < x.info().n * x.info().F; ++k) ASSERT_EQ(x.features()[k], y.features()[k]) << b;
  for (int64_t k = 0; k < x.info().n * 2; ++k) ASSERT_EQ(x.coords()[k], y.coords()[k]) << b;
}
}  // namespace

TEST(WsiHdf5, IpsAndClamLayoutsRoundTrip) {
  if (!have_hdf5()) GTEST_SKIP() << "built without HDF5 (IPSNET_HDF5): HDF5 tests skipped";
  WsiTempDir d;
  make_bags(d / "bags");
  std::string out;
  ASSERT_EQ(run_ipsnet("bags-h5 export " + (d / "bags") + " " + (d / "ips.h5"), &out), 0) << out;
  ASSERT_EQ(run_ipsnet("bags-h5 import --split test " + (d / "ips.h5") + " " + (d / "back"), &out), 0) << out;
  EXPECT_NE(out.find("imported 3 slides"), std::string::npos) << out;
  for (int i = 0; i < 3; ++i) {
    const std::string name = "slide_" + std::to_string(i) + ".bag";
    expect_same_bag(d / ("bags/bags/" + name), d / ("back/bags/" + name), true);
  }
  ASSERT_EQ(run_ipsnet("bags-h5 export --layout clam " + (d / "bags") + " " + (d / "clam"), &out), 0) << out;
  EXPECT_TRUE(fs::exists(d / "clam/h5_files/slide_1.h5"));
  EXPECT_TRUE(fs::exists(d / "clam/patches/slide_1.h5"));
  std::ofstream(d / "labels.csv") << "slide,label,split\nslide_0,0,train\nslide_1,tumor,train\nslide_2,1,test\n";
  ASSERT_EQ(run_ipsnet("bags-h5 import --layout clam --labels " + (d / "labels.csv") + " " + (d / "clam") + " " +
                       (d / "back2"), &out), 0) << out;
  auto b = BagReader::open(d / "back2/bags/slide_2.bag");
  EXPECT_EQ(b.info().label, 1);
  EXPECT_EQ(b.info().split, "test");
  EXPECT_EQ(b.info().level, 1);       // patch_level of CLAM's coordinates file
  EXPECT_EQ(b.info().read_size, 256);  // patch_size
  expect_same_bag(d / "bags/bags/slide_2.bag", d / "back2/bags/slide_2.bag", false);
}

TEST(WsiHdf5, BadFilesAreOneLine) {
  if (!have_hdf5()) GTEST_SKIP() << "built without HDF5 (IPSNET_HDF5): HDF5 tests skipped";
  WsiTempDir d;
  make_bags(d / "bags");
  std::string out;
  ASSERT_EQ(run_ipsnet("bags-h5 export " + (d / "bags") + " " + (d / "ips.h5"), &out), 0) << out;
  auto expect_error = [&](const std::string& args, const std::string& needle) {
    EXPECT_NE(run_ipsnet("bags-h5 " + args, &out), 0) << args;
    EXPECT_NE(out.find(needle), std::string::npos) << args << "\n" << out;
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  };
  // Truncated: HDF5 cannot open it (its superblock names a larger file).
  fs::copy_file(d / "ips.h5", d / "cut.h5");
  fs::resize_file(d / "cut.h5", fs::file_size(d / "cut.h5") / 2);
  expect_error("import " + (d / "cut.h5") + " " + (d / "x"), "cut.h5");
  // A CLAM directory whose file lacks 'features'.
  fs::create_directories(d / "clam/h5_files");
  fs::copy_file(d / "ips.h5", d / "clam/h5_files/s.h5");
  std::ofstream(d / "l.csv") << "s,1\n";
  expect_error("import --layout clam --labels " + (d / "l.csv") + " " + (d / "clam") + " " + (d / "x"),
               "has no dataset 'features'");
  expect_error("import --layout clam " + (d / "clam") + " " + (d / "x"), "give a labels CSV");
  expect_error("export --layout zarr " + (d / "bags") + " " + (d / "x"), "expected ips or clam");
  expect_error("export " + (d / "bags") + " " + (d / "ips.h5"), "already exists");
  EXPECT_FALSE(fs::exists(d / "x"));
}

TEST(WsiHdf5, ClamCoordinatesFiles) {
  if (!have_hdf5()) GTEST_SKIP() << "built without HDF5 (IPSNET_HDF5): HDF5 tests skipped";
  WsiTempDir d;
  make_bags(d / "bags");
  std::string out;
  ASSERT_EQ(run_ipsnet("bags-h5 export --layout clam " + (d / "bags") + " " + (d / "clam"), &out), 0) << out;
  // A coordinates file written by write_clam_coords is read back by the CLAM import.
  const std::vector<int64_t> xy = {0, 0, 512, 0, 1024, 0, 0, 512, 512, 512, 1024, 512, 0, 1024};
  write_clam_coords(d / "clam/patches/slide_2.h5", xy.data(), 7, 3, 64);
  std::ofstream(d / "l.csv") << "slide_0,0\nslide_1,1\nslide_2,1\n";
  ASSERT_EQ(run_ipsnet("bags-h5 import --layout clam --labels " + (d / "l.csv") + " " + (d / "clam") + " " +
                       (d / "back"), &out), 0) << out;
  auto b = BagReader::open(d / "back/bags/slide_2.bag");
  EXPECT_EQ(b.info().level, 3);
  EXPECT_EQ(b.info().read_size, 64);
  if (!have_openslide()) GTEST_SKIP() << "built without OpenSlide: wsi-tiles --clam-coords not tested";
  // wsi-tiles --clam-coords: one coordinates file per slide with tiles.
  ASSERT_EQ(run_ipsnet("generate-slides --quiet --size 512 --levels 3 --n-normal 1 --n-tumor 1 --n-test-normal 0 "
                       "--n-test-tumor 0 " + (d / "cam"), &out), 0) << out;
  ASSERT_EQ(run_ipsnet("wsi-tiles --quiet --clam-coords --tile-size 64 " + (d / "cam") + " " + (d / "tiles"), &out),
            0) << out;
  EXPECT_TRUE(fs::exists(d / "tiles/patches/normal_001.h5"));
  EXPECT_TRUE(fs::exists(d / "tiles/patches/tumor_001.h5"));
}

// Whole-slide images: the synthetic slide generator, reading through
// OpenSlide, ASAP XML annotations (data/slide_generator.h, data/wsi_slide.h,
// data/wsi_annotations.h). Skipped, with the reason, without OpenSlide.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "data/slide_generator.h"
#include "data/wsi_annotations.h"
#include "data/wsi_slide.h"
#include "engine/common/error.h"
#include "wsi_test_util.h"

using namespace ipsnet;
using namespace ipsnet::data;
using ipsnet::testing_wsi::WsiTempDir;

TEST(WsiAnnotations, RoundTripAndGeometry) {
  Polygon p;
  p.name = "Annotation 0";
  p.group = "Tumor";
  p.x = {10, 50, 50, 10};
  p.y = {10, 10, 40, 40};
  Polygon ex = p;
  ex.group = "_2";
  ex.name = "a & <b>";
  auto back = parse_asap_xml(asap_xml({p, ex}), "memory");
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[1].name, "a & <b>");
  EXPECT_EQ(back[0].x, p.x);
  EXPECT_EQ(back[0].y, p.y);
  EXPECT_FALSE(back[0].exclusion());
  EXPECT_TRUE(back[1].exclusion());
  EXPECT_TRUE(polygon_contains(p, 20, 20));
  EXPECT_FALSE(polygon_contains(p, 60, 20));
  EXPECT_TRUE(polygon_intersects_rect(p, 45, 35, 100, 100));    // a vertex inside
  EXPECT_TRUE(polygon_intersects_rect(p, 20, 20, 30, 30));      // rectangle inside the polygon
  EXPECT_TRUE(polygon_intersects_rect(p, 0, 20, 100, 25));      // edges crossing, no vertex inside
  EXPECT_FALSE(polygon_intersects_rect(p, 51, 0, 100, 100));
}

TEST(WsiAnnotations, AsapOrderAndCommaDecimals) {
  const std::string xml =
      "<?xml version=\"1.0\"?>\n<!-- a comment -->\n<ASAP_Annotations><Annotations>"
      "<Annotation Name=\"_0\" Type=\"Polygon\" PartOfGroup=\"_0\"><Coordinates>"
      "<Coordinate Order=\"2\" X=\"3,5\" Y=\"4\"/><Coordinate Order=\"0\" X=\"1\" Y=\"2\"/>"
      "<Coordinate Order=\"1\" X=\"5\" Y=\"6e1\"/></Coordinates></Annotation>"
      "<Annotation Name=\"dot\" Type=\"Dot\" PartOfGroup=\"None\"><Coordinates>"
      "<Coordinate Order=\"0\" X=\"1\" Y=\"1\"/></Coordinates></Annotation>"
      "</Annotations><AnnotationGroups/></ASAP_Annotations>";
  auto polys = parse_asap_xml(xml, "m");
  ASSERT_EQ(polys.size(), 1u);  // the one-point annotation is no region
  EXPECT_EQ(polys[0].x, (std::vector<double>{1, 5, 3.5}));
  EXPECT_EQ(polys[0].y, (std::vector<double>{2, 60, 4}));
}

TEST(WsiAnnotations, MalformedXmlIsOneClearLine) {
  struct Case {
    std::string xml, needle;
  };
  std::vector<Case> cases = {
      {"<ASAP_Annotations><Annotations></ASAP_Annotations>", "</ASAP_Annotations> closes <Annotations>"},
      {"<ASAP_Annotations><Annotations>", "ends inside <Annotations>"},
      {"<Other/>", "expected <ASAP_Annotations>"},
      {"<ASAP_Annotations><Annotation><Coordinate X=\"1\" /></Annotation></ASAP_Annotations>",
       "without the attribute Y"},
      {"<ASAP_Annotations><Annotation><Coordinate X=\"abc\" Y=\"1\"/></Annotation></ASAP_Annotations>",
       "X=\"abc\" is not a number"},
      {"<ASAP_Annotations>\n<Annotation Name=unquoted>", "line 2: expected a quoted value"},
      {"<ASAP_Annotations><!-- open", "unterminated comment"},
      {"", "no <ASAP_Annotations> element"},
  };
  for (const auto& c : cases) {
    try {
      parse_asap_xml(c.xml, "ann.xml");
      ADD_FAILURE() << "no error for: " << c.xml;
    } catch (const Error& e) {
      std::string m = e.what();
      EXPECT_NE(m.find(c.needle), std::string::npos) << m;
      EXPECT_NE(m.find("ann.xml"), std::string::npos) << m;
      EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    }
  }
}

TEST(WsiGenerator, RenderIsDeterministicAndTumourInsidePolygons) {
  std::vector<uint8_t> a, b;
  std::vector<Polygon> pa, pb;
  render_slide(512, true, false, 7, &a, &pa);
  render_slide(512, true, false, 7, &b, &pb);
  EXPECT_TRUE(a == b);
  ASSERT_FALSE(pa.empty());
  // Tumour pixels (dark nuclei) lie inside the polygons; white background has no colour.
  int64_t dark_inside = 0, dark_outside = 0, white = 0;
  for (int64_t y = 0; y < 512; ++y)
    for (int64_t x = 0; x < 512; ++x) {
      const uint8_t* p = &a[(y * 512 + x) * 3];
      bool dark = p[0] < 95 && p[1] < 50;
      bool in = false;
      for (const auto& poly : pa) in = in || polygon_contains(poly, x + 0.5, y + 0.5);
      (in ? dark_inside : dark_outside) += dark;
      white += p[0] > 230 && p[1] > 230 && p[2] > 230;
    }
  EXPECT_GT(dark_inside, 500);
  EXPECT_LE(dark_outside, dark_inside / 100);  // rasterisation at the polygon's edge only
  EXPECT_GT(white, 512 * 512 / 10);
  std::vector<uint8_t> blank;
  render_slide(512, false, true, 7, &blank, &pa);
  EXPECT_TRUE(pa.empty());
  for (size_t i = 0; i < blank.size(); ++i) ASSERT_GE(blank[i], 230);
}

TEST(WsiSlide, OpensGeneratedPyramidThroughOpenSlide) {
  if (!have_openslide()) GTEST_SKIP() << "built without OpenSlide (IPSNET_OPENSLIDE): whole-slide tests skipped";
  WsiTempDir d;
  for (const char* comp : {"deflate", "jpeg"}) {
    SlideGenOptions o;
    o.compression = comp;
    o.levels = 3;
    o.tile = 128;
    o.mpp = 0.5;
    std::vector<uint8_t> rgb;
    std::vector<Polygon> polys;
    render_slide(600, true, false, 3, &rgb, &polys);
    const std::string path = d / (std::string("s_") + comp + ".tif");
    write_pyramidal_tiff(path, rgb, 600, 600, o);
    auto s = WsiSlide::open(path);
    ASSERT_EQ(s->level_count(), 3) << comp;
    EXPECT_EQ(s->dimensions(0), (std::pair<int64_t, int64_t>(600, 600)));
    EXPECT_EQ(s->dimensions(1), (std::pair<int64_t, int64_t>(300, 300)));
    EXPECT_EQ(s->dimensions(2), (std::pair<int64_t, int64_t>(150, 150)));
    EXPECT_NEAR(s->downsample(2), 4.0, 1e-9);
    ASSERT_TRUE(s->mpp_x().has_value());
    EXPECT_NEAR(*s->mpp_x(), 0.5, 1e-4);
    EXPECT_NEAR(*s->mpp_y(), 0.5, 1e-4);
    EXPECT_EQ(s->best_level_for_downsample(2.5), 1);
    // Level 0 round trip (exact with deflate, close with JPEG); a region across tile borders.
    std::vector<uint8_t> got(200 * 150 * 3);
    s->read_region(100, 90, 0, 200, 150, got.data());
    double max_err = 0, sum_err = 0;
    for (int64_t y = 0; y < 150; ++y)
      for (int64_t x = 0; x < 200; ++x)
        for (int c = 0; c < 3; ++c) {
          double e = std::fabs(double(got[(y * 200 + x) * 3 + c]) - rgb[((y + 90) * 600 + x + 100) * 3 + c]);
          max_err = std::max(max_err, e);
          sum_err += e;
        }
    if (std::string(comp) == "deflate") {
      EXPECT_EQ(max_err, 0) << comp;
    } else {
      EXPECT_LT(sum_err / (200 * 150 * 3), 6.0) << comp;
    }
    // Level 2 pixel = mean of its 4x4 level-0 block (two 2x box steps, rounding each).
    std::vector<uint8_t> l2(150 * 150 * 3);
    s->read_region(0, 0, 2, 150, 150, l2.data());
    double mean_err = 0;
    for (int64_t y = 0; y < 150; ++y)
      for (int64_t x = 0; x < 150; ++x) {
        double m = 0;
        for (int dy = 0; dy < 4; ++dy)
          for (int dx = 0; dx < 4; ++dx) m += rgb[((4 * y + dy) * 600 + 4 * x + dx) * 3];
        mean_err += std::fabs(m / 16 - l2[(y * 150 + x) * 3]);
      }
    EXPECT_LT(mean_err / (150 * 150), std::string(comp) == "deflate" ? 0.6 : 4.0) << comp;
    // Outside the slide: OpenSlide's transparent pixels become white.
    std::vector<uint8_t> out(4 * 4 * 3);
    s->read_region(-10, -10, 0, 4, 4, out.data());
    for (uint8_t v : out) EXPECT_EQ(v, 255);
  }
}

TEST(WsiSlide, BadSlidesAreOneLine) {
  if (!have_openslide()) GTEST_SKIP() << "built without OpenSlide (IPSNET_OPENSLIDE): whole-slide tests skipped";
  WsiTempDir d;
  {
    std::ofstream f(d / "notaslide.tif");
    f << "this is not a TIFF";
  }
  {
    std::ofstream f(d / "readme.txt");
    f << "text";
  }
  for (const auto& c : std::vector<std::pair<std::string, std::string>>{
           {d / "missing.tif", "does not exist"},
           {d / "notaslide.tif", "notaslide.tif"},
           {d / "readme.txt", "readme.txt"}}) {
    try {
      WsiSlide::open(c.first);
      ADD_FAILURE() << c.first;
    } catch (const Error& e) {
      std::string m = e.what();
      EXPECT_NE(m.find(c.second), std::string::npos) << m;
      EXPECT_NE(m.find("slide"), std::string::npos) << m;
      EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    }
  }
}

TEST(WsiGenerator, Camelyon16LayoutThroughTheCommand) {
  if (!have_openslide()) GTEST_SKIP() << "built without OpenSlide (IPSNET_OPENSLIDE): whole-slide tests skipped";
  WsiTempDir d;
  std::string out;
  ASSERT_EQ(testing_wsi::run_ipsnet("generate-slides --size 512 --levels 3 --n-normal 1 --n-tumor 2 "
                                    "--n-test-normal 1 --n-test-tumor 1 --n-blank 1 --quiet " + (d / "cam"), &out),
            0) << out;
  namespace fs = std::filesystem;
  for (const char* f : {"training/normal/normal_001.tif", "training/normal/blank_001.tif",
                        "training/tumor/tumor_001.tif", "training/tumor/tumor_002.tif",
                        "training/lesion_annotations/tumor_001.xml", "training/lesion_annotations/tumor_002.xml",
                        "testing/images/test_001.tif", "testing/images/test_002.tif"})
    EXPECT_TRUE(fs::exists(d / ("cam/" + std::string(f)))) << f;
  int xmls = 0;
  for (const auto& e : fs::directory_iterator(d / "cam/testing/lesion_annotations")) {
    ++xmls;
    EXPECT_FALSE(read_asap_xml(e.path().string()).empty());
  }
  EXPECT_EQ(xmls, 1);
  EXPECT_NE(out.find("6 slides (3 with tumour)"), std::string::npos) << out;
  // An existing directory needs --force; bad options are one line.
  EXPECT_NE(testing_wsi::run_ipsnet("generate-slides --quiet " + (d / "cam"), &out), 0);
  EXPECT_NE(out.find("--force"), std::string::npos) << out;
  EXPECT_NE(testing_wsi::run_ipsnet("generate-slides --compression lzw " + (d / "x"), &out), 0);
  EXPECT_NE(out.find("expected jpeg or deflate"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(d / "x"));
}

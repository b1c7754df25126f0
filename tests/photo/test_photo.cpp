// Photographs: codecs (PNG, JPEG), the row decoder's crops and skips, PIL's
// bilinear resize, import-images (folders, CSV, bad input), the dataset
// format's checks, and the "photos" data source (lazy patches equal to the
// whole image's, bounded row bands, ImageNet normalisation).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "data/photo_codec.h"
#include "data/photo_dataset.h"
#include "data/photo_import.h"
#include "data/photo_source.h"
#include "data/source.h"
#include "engine/common/error.h"
#include "tests/photo/photo_test_util.h"

namespace ipsnet {
namespace {

namespace fs = std::filesystem;
using namespace testing_photo;

#define SKIP_WITHOUT_JPEG()                                                                          \
  do {                                                                                               \
    if (!data::jpeg_supported()) GTEST_SKIP() << "JPEG support not built (libjpeg62-turbo-dev missing)"; \
  } while (0)

// Runs f, expects an ipsnet::Error whose message contains every needle.
template <typename F>
void expect_error(F&& f, std::initializer_list<std::string> needles) {
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    const std::string m = e.what();
    for (const std::string& n : needles) EXPECT_NE(m.find(n), std::string::npos) << "'" << n << "' not in: " << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << "not one line: " << m;
  }
}

data::ImportImagesOptions quiet() {
  data::ImportImagesOptions o;
  o.quiet = true;
  return o;
}

// ---- codecs ---------------------------------------------------------------

TEST(PhotoCodec, png_round_trip_gray_and_rgb) {
  for (int c : {1, 3}) {
    auto px = make_pixels(37, 53, c, 3);
    auto bytes = data::encode_png(px.data(), 37, 53, c);
    EXPECT_EQ(data::sniff_format(bytes.data(), bytes.size()), data::PhotoFormat::kPng);
    data::PhotoInfo info = data::check_photo(bytes.data(), bytes.size(), "x.png");
    EXPECT_EQ(info.height, 37);
    EXPECT_EQ(info.width, 53);
    EXPECT_EQ(info.channels, c);
    int64_t h = 0, w = 0;
    EXPECT_EQ(data::decode_photo(bytes.data(), bytes.size(), c, "x.png", &h, &w), px);
    if (c == 1) {  // gray read as RGB: replicated
      auto rgb = data::decode_photo(bytes.data(), bytes.size(), 3, "x.png", &h, &w);
      for (size_t k = 0; k < px.size(); ++k)
        ASSERT_TRUE(rgb[3 * k] == px[k] && rgb[3 * k + 1] == px[k] && rgb[3 * k + 2] == px[k]);
    } else {
      expect_error([&] { data::decode_photo(bytes.data(), bytes.size(), 1, "x.png", &h, &w); },
                   {"x.png", "colour PNG in a grayscale set"});
    }
  }
}

TEST(PhotoCodec, png_conversions_and_refusals) {
  const int64_t h = 6, w = 5;
  // Palette with transparency: read as RGB, alpha ignored.
  std::vector<png_color> pal = {{10, 20, 30}, {200, 100, 50}, {0, 255, 0}};
  std::vector<uint8_t> idx(static_cast<size_t>(h * w));
  for (size_t k = 0; k < idx.size(); ++k) idx[k] = static_cast<uint8_t>(k % 3);
  auto p = raw_png(h, w, PNG_COLOR_TYPE_PALETTE, 8, idx, false, pal, {128});
  data::PhotoInfo info = data::check_photo(p.data(), p.size(), "pal.png");
  EXPECT_TRUE(info.palette);
  EXPECT_TRUE(info.alpha);
  EXPECT_EQ(info.channels, 3);
  int64_t oh, ow;
  auto rgb = data::decode_photo(p.data(), p.size(), 3, "pal.png", &oh, &ow);
  for (size_t k = 0; k < idx.size(); ++k) {
    ASSERT_EQ(rgb[3 * k], pal[idx[k]].red);
    ASSERT_EQ(rgb[3 * k + 2], pal[idx[k]].blue);
  }
  // 1-bit gray: expanded to 0 / 255.
  std::vector<uint8_t> bits(static_cast<size_t>(h), 0xA0);  // row: 1 0 1 0 0
  auto b1 = raw_png(h, w, PNG_COLOR_TYPE_GRAY, 1, bits);
  auto g = data::decode_photo(b1.data(), b1.size(), 1, "b.png", &oh, &ow);
  EXPECT_EQ(g[0], 255);
  EXPECT_EQ(g[1], 0);
  EXPECT_EQ(g[2], 255);
  // Gray + alpha: alpha dropped.
  std::vector<uint8_t> ga(static_cast<size_t>(h * w * 2));
  for (size_t k = 0; k < ga.size(); ++k) ga[k] = static_cast<uint8_t>(k * 7);
  auto pga = raw_png(h, w, PNG_COLOR_TYPE_GRAY_ALPHA, 8, ga);
  g = data::decode_photo(pga.data(), pga.size(), 1, "ga.png", &oh, &ow);
  for (int64_t k = 0; k < h * w; ++k) ASSERT_EQ(g[static_cast<size_t>(k)], ga[static_cast<size_t>(2 * k)]);
  // Interlaced: whole decode works, the row decoder refuses (import re-encodes).
  auto px = make_pixels(h, w, 3, 1);
  auto il = raw_png(h, w, PNG_COLOR_TYPE_RGB, 8, px, true);
  EXPECT_TRUE(data::check_photo(il.data(), il.size(), "il.png").interlaced);
  EXPECT_EQ(data::decode_photo(il.data(), il.size(), 3, "il.png", &oh, &ow), px);
  expect_error([&] { data::RowDecoder::open(il.data(), il.size(), 3, "il.png"); }, {"il.png", "interlaced"});
  // 16-bit: refused.
  std::vector<uint8_t> d16(static_cast<size_t>(h * w * 2), 7);
  auto p16 = raw_png(h, w, PNG_COLOR_TYPE_GRAY, 16, d16);
  expect_error([&] { data::check_photo(p16.data(), p16.size(), "deep.png"); }, {"deep.png", "16-bit"});
  // Truncated and corrupt.
  auto good = data::encode_png(px.data(), h, w, 3);
  std::vector<uint8_t> cut(good.begin(), good.begin() + static_cast<long>(good.size() / 2));
  expect_error([&] { data::check_photo(cut.data(), cut.size(), "cut.png"); }, {"cut.png"});
  std::vector<uint8_t> bad = good;
  bad[bad.size() - 20] ^= 0x5a;  // inside the IDAT data or its CRC
  expect_error([&] { data::check_photo(bad.data(), bad.size(), "bad.png"); }, {"bad.png"});
  std::vector<uint8_t> junk = {'G', 'I', 'F', '8', '9', 'a', 0, 0, 0, 0};
  expect_error([&] { data::check_photo(junk.data(), junk.size(), "x.gif"); }, {"x.gif", "neither a PNG nor a JPEG"});
}

TEST(PhotoCodec, jpeg_decode_and_refusals) {
  SKIP_WITHOUT_JPEG();
  const int64_t h = 70, w = 90;
  auto px = make_pixels(h, w, 3, 5);
  auto j = data::encode_jpeg(px.data(), h, w, 3, 95);
  data::PhotoInfo info = data::check_photo(j.data(), j.size(), "a.jpg");
  EXPECT_EQ(info.format, data::PhotoFormat::kJpeg);
  EXPECT_EQ(info.channels, 3);
  int64_t oh, ow;
  auto d = data::decode_photo(j.data(), j.size(), 3, "a.jpg", &oh, &ow);
  double err = 0;
  for (size_t k = 0; k < px.size(); ++k) err += std::abs(int(d[k]) - int(px[k]));
  EXPECT_LT(err / px.size(), 6.0);  // lossy, but close
  // Gray JPEG read as RGB.
  auto gpx = make_pixels(h, w, 1, 5);
  auto gj = data::encode_jpeg(gpx.data(), h, w, 1, 90);
  EXPECT_EQ(data::check_photo(gj.data(), gj.size(), "g.jpg").channels, 1);
  auto g3 = data::decode_photo(gj.data(), gj.size(), 3, "g.jpg", &oh, &ow);
  auto g1 = data::decode_photo(gj.data(), gj.size(), 1, "g.jpg", &oh, &ow);
  for (size_t k = 0; k < g1.size(); ++k) ASSERT_TRUE(g3[3 * k] == g1[k] && g3[3 * k + 2] == g1[k]);
  // CMYK refused; truncated refused.
  auto cm = cmyk_jpeg(16, 16);
  expect_error([&] { data::check_photo(cm.data(), cm.size(), "cmyk.jpg"); }, {"cmyk.jpg", "CMYK"});
  std::vector<uint8_t> cut(j.begin(), j.begin() + static_cast<long>(j.size() * 2 / 3));
  expect_error([&] { data::check_photo(cut.data(), cut.size(), "cut.jpg"); }, {"cut.jpg", "corrupt JPEG data"});
  std::vector<uint8_t> head(j.begin(), j.begin() + 100);
  expect_error([&] { data::check_photo(head.data(), head.size(), "head.jpg"); }, {"head.jpg"});
}

// Every crop and skip the row decoder does gives the rows of a whole decode.
TEST(PhotoCodec, row_decoder_crops_and_skips_are_exact) {
  SKIP_WITHOUT_JPEG();
  const int64_t h = 203, w = 317;
  auto px = make_pixels(h, w, 3, 9);
  std::vector<std::pair<std::string, std::vector<uint8_t>>> files = {
      {"420.jpg", jpeg_420(px, h, w, false)},
      {"420p.jpg", jpeg_420(px, h, w, true)},
      {"444.jpg", data::encode_jpeg(px.data(), h, w, 3, 95)},
      {"gray.jpg", data::encode_jpeg(make_pixels(h, w, 1, 2).data(), h, w, 1, 80)},
      {"a.png", data::encode_png(px.data(), h, w, 3)}};
  std::mt19937 gen(1);
  for (auto& f : files) {
    for (int C : {1, 3}) {
      if (C == 1 && f.first != "gray.jpg") continue;
      int64_t oh, ow;
      auto whole = data::decode_photo(f.second.data(), f.second.size(), C, f.first, &oh, &ow);
      for (int trial = 0; trial < 12; ++trial) {
        int64_t c0 = gen() % w, c1 = c0 + 1 + gen() % (w - c0), r0 = gen() % h, r1 = r0 + 1 + gen() % (h - r0);
        auto d = data::RowDecoder::open(f.second.data(), f.second.size(), C, f.first, c0, c1);
        ASSERT_LE(d->col0(), c0);
        ASSERT_GE(d->col0() + d->row_width(), c1);
        d->skip(r0);
        std::vector<uint8_t> row(static_cast<size_t>(d->row_width() * C));
        for (int64_t y = r0; y < r1; ++y) {
          ASSERT_EQ(d->next_row(), y);
          d->read(row.data());
          for (int64_t x = c0; x < c1; ++x)
            for (int k = 0; k < C; ++k)
              ASSERT_EQ(row[static_cast<size_t>((x - d->col0()) * C + k)],
                        whole[static_cast<size_t>((y * w + x) * C + k)])
                  << f.first << " row " << y << " col " << x << " crop " << c0 << ".." << c1 << " skip " << r0;
        }
      }
    }
  }
}

TEST(PhotoCodec, resize_matches_pil) {
  std::ifstream in(std::string(IPSNET_FIXTURES_DIR) + "/photo/pil_resize.bin", std::ios::binary);
  ASSERT_TRUE(in.good()) << "fixture missing (tests/fixtures/make_photo_resize.py)";
  std::vector<uint8_t> ref((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const int64_t H = 37, W = 53;
  struct Case { int c; int64_t h, w; };
  const Case cases[] = {{3, 20, 30}, {3, 80, 100}, {3, 37, 20}, {3, 11, 53}, {1, 9, 7}, {1, 100, 61}, {3, 5, 160}};
  size_t off = 0;
  for (const Case& cs : cases) {
    std::vector<uint8_t> src(static_cast<size_t>(H * W * cs.c));
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x)
        for (int k = 0; k < cs.c; ++k)
          src[static_cast<size_t>((y * W + x) * cs.c + k)] = static_cast<uint8_t>((7 * x + 13 * y + 50 * k + (x * y) % 17) % 256);
    auto out = data::resize_bilinear_pil(src.data(), H, W, cs.c, cs.h, cs.w);
    ASSERT_LE(off + out.size(), ref.size());
    int diff = 0;
    for (size_t k = 0; k < out.size(); ++k) diff = std::max(diff, std::abs(int(out[k]) - int(ref[off + k])));
    EXPECT_EQ(diff, 0) << "case " << cs.c << "ch -> " << cs.h << "x" << cs.w;
    off += out.size();
  }
  EXPECT_EQ(off, ref.size());
}

// ---- import-images ----------------------------------------------------------

// A folder tree: cats (3 JPEG), dogs (2 PNG, one gray), birds (1 palette PNG).
void make_tree(const std::string& root, bool with_jpeg) {
  for (int k = 0; k < 3; ++k) {
    auto px = make_pixels(64 + 8 * k, 96, 3, 10 + k);
    if (with_jpeg)
      write_bytes(root + "/cats/c" + std::to_string(k) + ".jpg", data::encode_jpeg(px.data(), 64 + 8 * k, 96, 3, 90));
    else
      write_bytes(root + "/cats/c" + std::to_string(k) + ".png", data::encode_png(px.data(), 64 + 8 * k, 96, 3));
  }
  auto d0 = make_pixels(50, 60, 3, 20);
  write_bytes(root + "/dogs/d0.png", data::encode_png(d0.data(), 50, 60, 3));
  auto d1 = make_pixels(50, 60, 1, 21);
  write_bytes(root + "/dogs/sub/d1.PNG", data::encode_png(d1.data(), 50, 60, 1));
  write_bytes(root + "/dogs/notes.txt", {'h', 'i'});
  std::vector<png_color> pal = {{255, 0, 0}, {0, 0, 255}};
  std::vector<uint8_t> idx(40 * 40);
  for (size_t k = 0; k < idx.size(); ++k) idx[k] = static_cast<uint8_t>((k / 40 + k % 40) % 2);
  write_bytes(root + "/birds/b0.png", raw_png(40, 40, PNG_COLOR_TYPE_PALETTE, 8, idx, false, pal));
}

TEST(PhotoImport, folder_tree) {
  TempDir t;
  const bool jpeg = data::jpeg_supported();
  make_tree(t / "src", jpeg);
  data::ImportImagesOptions o = quiet();
  o.test_fraction = 0.34;
  auto s = data::import_images(t / "src", t / "out", o);
  EXPECT_EQ(s.layout, "folders");
  EXPECT_EQ(s.n_train + s.n_test, 6);
  EXPECT_EQ(s.channels, 3);
  EXPECT_EQ(s.gray_as_rgb, 1);
  EXPECT_EQ(s.palette, 1);
  EXPECT_EQ(s.skipped_files, 1);
  EXPECT_EQ(s.n_test, 2);  // round(0.34 * 3) cats + round(0.34 * 2) dogs + round(0.34) birds
  auto r = data::PhotoReader::open(t / "out", "train");
  ASSERT_EQ(r.tasks().size(), 1u);
  EXPECT_EQ(r.tasks()[0].name, "label");
  EXPECT_EQ(r.tasks()[0].classes, (std::vector<std::string>{"birds", "cats", "dogs"}));
  EXPECT_EQ(r.channels(), 3);
  r.verify_all();
  // JPEG bytes stored as they are.
  for (int64_t i = 0; i < r.size(); ++i)
    if (r.entry(i).format == data::PhotoFormat::kJpeg) {
      size_t n;
      const uint8_t* b = r.bytes(i, &n);
      EXPECT_EQ(std::vector<uint8_t>(b, b + n), read_bytes(t / ("src/" + r.entry(i).path)));
    }
  const std::string info = data::describe_photo_dataset(t / "out", true);
  EXPECT_NE(info.find("task 'label', 3 classes"), std::string::npos) << info;
  EXPECT_NE(info.find("checksums OK"), std::string::npos) << info;
  EXPECT_TRUE(fs::exists(t / "out/parameters.json"));
  // The source opens it as "photos".
  data::SourceOptions so;
  so.patch_size = 20;
  auto src = data::open_source(t / "out", "train", so);
  EXPECT_EQ(src->kind(), "photos");
  EXPECT_EQ(src->channels(), 3);
}

TEST(PhotoImport, train_test_folders_and_resize) {
  TempDir t;
  make_tree(t / "src/train", false);
  make_tree(t / "src/test", false);
  data::ImportImagesOptions o = quiet();
  o.resize_h = 30;
  o.resize_w = 40;
  auto s = data::import_images(t / "src", t / "out", o);
  EXPECT_EQ(s.layout, "folders with train/ and test/");
  EXPECT_EQ(s.n_train, 6);
  EXPECT_EQ(s.n_test, 6);
  EXPECT_EQ(s.reencoded, 12);
  auto r = data::PhotoReader::open(t / "out", "test");
  for (int64_t i = 0; i < r.size(); ++i) {
    EXPECT_EQ(r.entry(i).height, 30);
    EXPECT_EQ(r.entry(i).width, 40);
  }
  // The stored PNG is the PIL resize of the original, losslessly.
  size_t n;
  const uint8_t* b = r.bytes(3, &n);  // cats/c0.png... order: birds, cats x3, dogs x2
  int64_t h, w, h0, w0;
  auto got = data::decode_photo(b, n, 3, "x", &h, &w);
  auto orig_b = read_bytes(t / ("src/" + r.entry(3).path));
  auto orig = data::decode_photo(orig_b.data(), orig_b.size(), 3, "y", &h0, &w0);
  EXPECT_EQ(got, data::resize_bilinear_pil(orig.data(), h0, w0, 3, 30, 40));
}

TEST(PhotoImport, csv_with_tasks_and_split) {
  TempDir t;
  for (int k = 0; k < 6; ++k) {
    auto px = make_pixels(32, 48, 1, 40 + k);
    write_bytes(t / ("imgs/p" + std::to_string(k) + ".png"), data::encode_png(px.data(), 32, 48, 1));
  }
  std::ofstream(t / "labels.csv") << "file,\"sign, kind\",speed,split\r\n"
                                  << "imgs/p0.png,a,80,train\n"
                                  << "imgs/p1.png,b,50,train\n"
                                  << "\"imgs/p2.png\",a,100,train\n"
                                  << "\n"
                                  << "imgs/p3.png, b ,50,test\n"
                                  << "imgs/p4.png,a,80,test\n"
                                  << "imgs/p5.png,a,50,train\n";
  auto s = data::import_images(t / "labels.csv", t / "out", quiet());
  EXPECT_EQ(s.layout, "csv");
  EXPECT_EQ(s.n_train, 4);
  EXPECT_EQ(s.n_test, 2);
  EXPECT_EQ(s.channels, 1);
  auto r = data::PhotoReader::open(t / "out", "train");
  ASSERT_EQ(r.tasks().size(), 2u);
  EXPECT_EQ(r.tasks()[0].name, "sign, kind");
  EXPECT_EQ(r.tasks()[1].classes, (std::vector<std::string>{"50", "80", "100"}));  // numeric order
  EXPECT_EQ(r.entry(2).labels, (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(r.entry(2).path, "imgs/p2.png");
  auto te = data::PhotoReader::open(t / "out", "test");
  EXPECT_EQ(te.entry(0).labels, (std::vector<int32_t>{1, 0}));
}

TEST(PhotoImport, bad_input_is_one_line_and_nothing_is_written) {
  TempDir t;
  auto px = make_pixels(20, 20, 3, 1);
  auto png = data::encode_png(px.data(), 20, 20, 3);
  auto expect_fail = [&](const std::string& src, std::initializer_list<std::string> needles) {
    expect_error([&] { data::import_images(src, t / "out", quiet()); }, needles);
    EXPECT_FALSE(fs::exists(t / "out"));
    for (const auto& e : fs::directory_iterator(t.path))
      EXPECT_EQ(e.path().filename().string().find("out.tmp"), std::string::npos) << e.path();
  };
  // Empty class folder.
  write_bytes(t / "a/x/1.png", png);
  fs::create_directories(t / "a/y");
  expect_fail(t / "a", {"class folder", "a/y", "holds no"});
  // Truncated PNG in a tree.
  write_bytes(t / "b/x/1.png", png);
  write_bytes(t / "b/x/2.png", std::vector<uint8_t>(png.begin(), png.begin() + 60));
  expect_fail(t / "b", {"'x/2.png'"});
  // 16-bit PNG.
  write_bytes(t / "c/x/1.png", raw_png(4, 4, PNG_COLOR_TYPE_RGB, 16, std::vector<uint8_t>(4 * 4 * 6, 9)));
  expect_fail(t / "c", {"'x/1.png'", "16-bit"});
  // CSV: missing file, bad row, empty label.
  write_bytes(t / "d/1.png", png);
  std::ofstream(t / "d/l.csv") << "path,label\n1.png,a\n2.png,b\n";
  expect_fail(t / "d/l.csv", {"'2.png'", "l.csv row 3", "no such file"});
  std::ofstream(t / "d/m.csv") << "path,label\n1.png,a\n1.png,b,c\n";
  expect_fail(t / "d/m.csv", {"m.csv' row 3", "3 fields"});
  std::ofstream(t / "d/n.csv") << "path,label\n1.png,\n";
  expect_fail(t / "d/n.csv", {"n.csv' row 2", "empty label"});
  std::ofstream(t / "d/q.csv") << "path,label\n\"1.png,a\n";
  expect_fail(t / "d/q.csv", {"q.csv' row 2", "unreadable"});
  if (data::jpeg_supported()) {
    write_bytes(t / "e/x/1.jpg", cmyk_jpeg(8, 8));
    expect_fail(t / "e", {"'x/1.jpg'", "CMYK"});
    auto j = data::encode_jpeg(px.data(), 20, 20, 3, 90);
    write_bytes(t / "f/x/1.jpg", std::vector<uint8_t>(j.begin(), j.begin() + static_cast<long>(j.size() - 40)));
    expect_fail(t / "f", {"'x/1.jpg'", "corrupt JPEG data"});
  }
  // An existing OUT is refused without force.
  fs::create_directories(t / "out");
  expect_error([&] { data::import_images(t / "b/x/1.png", t / "out", quiet()); }, {});
}

TEST(PhotoDataset, corruption_is_detected) {
  TempDir t;
  make_tree(t / "src", false);
  data::import_images(t / "src", t / "out", quiet());
  const std::string data_file = t / "out/train.ipsp", index_file = t / "out/train.ipspx";
  auto original = read_bytes(data_file);
  // A flipped byte inside a record: that record fails its CRC when read.
  auto bad = original;
  bad[100] ^= 1;  // inside image 0's record (it starts after the 64-byte header)
  write_bytes(data_file, bad);
  {
    auto r = data::PhotoReader::open(t / "out", "train");
    expect_error([&] { r.verify_all(); }, {"train.ipsp", "image 0", "fails its checksum"});
    data::SourceOptions so;
    so.patch_size = 10;
    data::PhotoSource s(data::PhotoReader::open(t / "out", "train"), so);
    std::vector<float> buf(3 * 10 * 10);
    int64_t idx = 0;
    expect_error([&] { s.read_instances(0, &idx, 1, buf.data()); }, {"fails its checksum", "birds/b0.png"});
  }
  // Truncated data file: refused on open.
  write_bytes(data_file, std::vector<uint8_t>(original.begin(), original.end() - 10));
  expect_error([&] { data::PhotoReader::open(t / "out", "train"); }, {"train.ipsp", "truncated"});
  write_bytes(data_file, original);
  // Corrupt index.
  auto idx = read_bytes(index_file);
  idx[64 + 20] ^= 1;
  write_bytes(index_file, idx);
  expect_error([&] { data::PhotoReader::open(t / "out", "train"); }, {"train.ipspx", "index checksum"});
}

// ---- the data source --------------------------------------------------------

// Lazy patches (any subset, any order, overlapping strides) equal the whole
// image's, and one call holds one band of patch rows.
TEST(PhotoSource, lazy_patches_equal_whole_image) {
  TempDir t;
  const bool jpeg = data::jpeg_supported();
  const int64_t H = 230, W = 310;
  auto px = make_pixels(H, W, 3, 77);
  write_bytes(t / "src/a/0.png", data::encode_png(px.data(), H, W, 3));
  if (jpeg) {
    write_bytes(t / "src/a/1.jpg", jpeg_420(px, H, W, false));
    write_bytes(t / "src/b/2.jpg", data::encode_jpeg(px.data(), H, W, 3, 95));
    write_bytes(t / "src/b/3.jpg", jpeg_420(px, H, W, true));
  } else {
    write_bytes(t / "src/b/2.png", data::encode_png(px.data(), H, W, 3));
  }
  data::import_images(t / "src", t / "out", quiet());
  std::mt19937 gen(3);
  for (auto ps : {std::pair<int64_t, int64_t>{50, 50}, {64, 40}}) {
    for (const char* norm : {"none", "imagenet"}) {
      data::SourceOptions so;
      so.patch_size = ps.first;
      so.patch_stride = ps.second;
      so.normalize = norm;
      auto src = data::open_source(t / "out", "train", so);
      auto* photo = dynamic_cast<data::PhotoSource*>(src.get());
      ASSERT_NE(photo, nullptr);
      for (int64_t i = 0; i < src->size(); ++i) {
        const PatchGrid g = src->grid(i);
        const int64_t C = 3, P = g.patch_numel(C);
        std::vector<float> img(static_cast<size_t>(C * H * W));
        src->read_image(i, img.data());
        for (int trial = 0; trial < 6; ++trial) {
          std::vector<int64_t> idx;
          const int64_t n = 1 + gen() % g.count();
          for (int64_t k = 0; k < n; ++k) idx.push_back(gen() % g.count());
          std::vector<float> got(static_cast<size_t>(n * P));
          src->read_instances(i, idx.data(), n, got.data());
          for (int64_t k = 0; k < n; ++k)
            for (int64_t c = 0; c < C; ++c)
              for (int64_t y = 0; y < g.patch_h; ++y)
                for (int64_t x = 0; x < g.patch_w; ++x)
                  ASSERT_EQ(got[static_cast<size_t>(k * P + (c * g.patch_h + y) * g.patch_w + x)],
                            img[static_cast<size_t>(g.source_offset(idx[static_cast<size_t>(k)], c, y, x))])
                      << "image " << i << " patch " << idx[static_cast<size_t>(k)];
        }
      }
      // A selection pass: every patch in chunks, in index order, continues one decoder per image.
      for (int64_t i = 0; i < src->size(); ++i) {
        const PatchGrid g = src->grid(i);
        const int64_t C = 3, P = g.patch_numel(C);
        std::vector<float> img(static_cast<size_t>(C * H * W));
        src->read_image(i, img.data());
        const int64_t opened = photo->decoders_opened();
        for (int64_t a = 0; a < g.count(); a += 5) {
          const int64_t n = std::min<int64_t>(5, g.count() - a);
          std::vector<int64_t> idx(static_cast<size_t>(n));
          for (int64_t k = 0; k < n; ++k) idx[static_cast<size_t>(k)] = a + k;
          std::vector<float> got(static_cast<size_t>(n * P));
          src->read_instances(i, idx.data(), n, got.data());
          for (int64_t k = 0; k < n; ++k)
            for (int64_t c = 0; c < C; ++c)
              for (int64_t y = 0; y < g.patch_h; ++y)
                for (int64_t x = 0; x < g.patch_w; ++x)
                  ASSERT_EQ(got[static_cast<size_t>(k * P + (c * g.patch_h + y) * g.patch_w + x)],
                            img[static_cast<size_t>(g.source_offset(a + k, c, y, x))])
                      << "image " << i << " patch " << a + k;
        }
        EXPECT_EQ(photo->decoders_opened() - opened, 1) << "image " << i;
      }
      EXPECT_LE(photo->peak_band_bytes(), ps.first * W * 3);
    }
  }
}

// Augmentation: lazy patches equal the augmented whole image's; the draw
// depends on (seed, epoch, image) only; a translation moves the content.
TEST(PhotoSource, augmentation_is_deterministic_and_lazy_equals_eager) {
  TempDir t;
  const int64_t H = 90, W = 120;
  auto px = make_pixels(H, W, 3, 5);
  write_bytes(t / "src/a/0.png", data::encode_png(px.data(), H, W, 3));
  if (data::jpeg_supported()) write_bytes(t / "src/a/1.jpg", jpeg_420(px, H, W, false));
  data::import_images(t / "src", t / "out", quiet());
  data::SourceOptions so;
  so.patch_size = 30;
  so.patch_stride = 20;
  so.normalize = "imagenet";
  so.jitter = 0.1;
  so.translate = 25;
  so.augment_seed = 42;
  auto src = data::open_source(t / "out", "train", so);
  auto* photo = dynamic_cast<data::PhotoSource*>(src.get());
  ASSERT_NE(photo, nullptr);
  const int64_t C = 3, plane = H * W;
  std::mt19937 gen(5);
  std::vector<std::vector<float>> by_epoch;
  for (int64_t epoch : {0, 1, 0}) {
    src->set_epoch(epoch);
    for (int64_t i = 0; i < src->size(); ++i) {
      const PatchGrid g = src->grid(i);
      const int64_t P = g.patch_numel(C);
      std::vector<float> img(static_cast<size_t>(C * plane));
      src->read_image(i, img.data());
      if (i == 0) by_epoch.push_back(img);
      for (int trial = 0; trial < 4; ++trial) {
        std::vector<int64_t> idx;
        const int64_t n = 1 + gen() % g.count();
        for (int64_t k = 0; k < n; ++k) idx.push_back(gen() % g.count());
        std::vector<float> got(static_cast<size_t>(n * P));
        src->read_instances(i, idx.data(), n, got.data());
        for (int64_t k = 0; k < n; ++k)
          for (int64_t c = 0; c < C; ++c)
            for (int64_t y = 0; y < g.patch_h; ++y)
              for (int64_t x = 0; x < g.patch_w; ++x)
                ASSERT_EQ(got[static_cast<size_t>(k * P + (c * g.patch_h + y) * g.patch_w + x)],
                          img[static_cast<size_t>(g.source_offset(idx[static_cast<size_t>(k)], c, y, x))])
                    << "epoch " << epoch << " image " << i << " patch " << idx[static_cast<size_t>(k)];
      }
    }
  }
  EXPECT_NE(by_epoch[0], by_epoch[1]);  // another epoch, another draw
  EXPECT_EQ(by_epoch[0], by_epoch[2]);  // the same epoch, the same draw
  // Translation only: the augmented image is the plain one moved by (ty, tx), zero-filled.
  so.jitter = 0;
  so.normalize = "none";
  auto tr = data::open_source(t / "out", "train", so);
  so.translate = 0;
  auto plain = data::open_source(t / "out", "train", so);
  std::vector<float> a(static_cast<size_t>(C * plane)), b(a.size());
  tr->set_epoch(3);
  tr->read_image(0, a.data());
  plain->read_image(0, b.data());
  const auto aug = dynamic_cast<data::PhotoSource*>(tr.get())->augment(0);
  EXPECT_TRUE(aug.ty != 0 || aug.tx != 0);
  EXPECT_LE(std::abs(aug.ty), 25);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) {
        const int64_t sy = y - aug.ty, sx = x - aug.tx;
        const float want = (sy < 0 || sy >= H || sx < 0 || sx >= W) ? 0.0f : b[static_cast<size_t>((c * H + sy) * W + sx)];
        ASSERT_EQ(a[static_cast<size_t>((c * H + y) * W + x)], want) << c << " " << y << " " << x;
      }
  // Brightness alone (hue, saturation, contrast factors near 1) keeps values in [0, 1].
  so.jitter = 0.5;
  so.translate = 0;
  auto j = data::open_source(t / "out", "train", so);
  j->read_image(0, a.data());
  for (float v : a) ASSERT_TRUE(v >= 0.0f && v <= 1.0f);
  EXPECT_NE(a, b);
}

TEST(PhotoSource, values_labels_and_normalisation) {
  TempDir t;
  std::vector<uint8_t> px = {0, 51, 255, 255, 0, 102};  // 1x2 RGB
  write_bytes(t / "src/one/a.png", data::encode_png(px.data(), 1, 2, 3));
  write_bytes(t / "src/two/b.png", data::encode_png(px.data(), 1, 2, 3));
  data::import_images(t / "src", t / "out", quiet());
  data::SourceOptions so;
  so.patch_size = 1;
  auto s = data::open_source(t / "out", "train", so);
  EXPECT_EQ(s->labels().size(), 1u);
  EXPECT_EQ(s->labels()[0].n_class, 2);
  EXPECT_EQ(s->classes(1, "label"), std::vector<int64_t>{1});
  EXPECT_EQ(s->instance_shape(), (std::vector<int64_t>{3, 1, 1}));
  std::vector<float> img(6);
  s->read_image(0, img.data());
  EXPECT_EQ(img, (std::vector<float>{0.0f, 255 / 255.0f, 51 / 255.0f, 0.0f, 255 / 255.0f, 102 / 255.0f}));
  so.normalize = "imagenet";
  auto n = data::open_source(t / "out", "train", so);
  n->read_image(0, img.data());
  EXPECT_FLOAT_EQ(img[0], (0.0f - 0.485f) / 0.229f);
  EXPECT_FLOAT_EQ(img[2], (51 / 255.0f - 0.456f) / 0.224f);
  EXPECT_FLOAT_EQ(img[5], (102 / 255.0f - 0.406f) / 0.225f);
  so.normalize = "bogus";
  expect_error([&] { data::open_source(t / "out", "train", so); }, {"bogus"});
  expect_error([&] { s->classes(0, "speed"); }, {"label", "speed"});
}

}  // namespace
}  // namespace ipsnet

#include "data/signs_generator.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <thread>

#include "data/photo_codec.h"
#include "data/resize.h"
#include "engine/common/error.h"
#include "engine/common/files.h"
#include "engine/common/ordered_parallel.h"
#include "engine/random/generator.h"

namespace ipsnet {
namespace data {

namespace fs = std::filesystem;

namespace {

struct Canvas {
  int64_t h, w;
  std::vector<float> px;  // (h, w, 3) in [0, 255]
  float* at(int64_t y, int64_t x) { return &px[static_cast<size_t>((y * w + x) * 3)]; }
  void blend(int64_t y, int64_t x, const float c[3], float a) {
    if (y < 0 || x < 0 || y >= h || x >= w || a <= 0) return;
    float* p = at(y, x);
    for (int k = 0; k < 3; ++k) p[k] = p[k] * (1 - a) + c[k] * a;
  }
};

struct Box {
  double x1, y1, x2, y2;
  bool overlaps(const Box& b, double margin) const {
    return !(x2 + margin < b.x1 || b.x2 + margin < x1 || y2 + margin < b.y1 || b.y2 + margin < y1);
  }
};

void background(Canvas& c, Generator& g) {
  const double horizon = c.h * g.uniform(0.35, 0.5);
  const float sky0[3] = {static_cast<float>(g.uniform(90, 150)), static_cast<float>(g.uniform(130, 180)), 230};
  const float road[3] = {static_cast<float>(g.uniform(70, 110)), static_cast<float>(g.uniform(70, 110)),
                         static_cast<float>(g.uniform(75, 115))};
  for (int64_t y = 0; y < c.h; ++y)
    for (int64_t x = 0; x < c.w; ++x) {
      float* p = c.at(y, x);
      if (y < horizon) {
        const float t = static_cast<float>(y / horizon);
        for (int k = 0; k < 3; ++k) p[k] = sky0[k] * (1 - 0.3f * t) + 220 * 0.3f * t;
      } else {
        // Road in a trapezoid, green verges beside it.
        const double t = (y - horizon) / (c.h - horizon);
        const double half = c.w * (0.05 + 0.45 * t);
        const bool on_road = std::fabs(x - c.w / 2.0) < half;
        for (int k = 0; k < 3; ++k) p[k] = on_road ? road[k] : (k == 1 ? 120.0f : 70.0f);
        if (on_road && std::fabs(x - c.w / 2.0) < 3 + 6 * t && static_cast<int64_t>(y / 20) % 2 == 0)
          p[0] = p[1] = p[2] = 235;  // centre line
      }
    }
  // Houses along the horizon, trees.
  const int n_house = static_cast<int>(g.randint(int64_t{2}, int64_t{7}));
  for (int k = 0; k < n_house; ++k) {
    const double hw = c.w * g.uniform(0.05, 0.15), hh = c.h * g.uniform(0.08, 0.2);
    const double x0 = g.uniform(0, c.w - hw), y1 = horizon + g.uniform(-5, 10);
    const float col[3] = {static_cast<float>(g.uniform(120, 220)), static_cast<float>(g.uniform(80, 200)),
                          static_cast<float>(g.uniform(60, 180))};
    for (int64_t y = static_cast<int64_t>(y1 - hh); y < static_cast<int64_t>(y1); ++y)
      for (int64_t x = static_cast<int64_t>(x0); x < static_cast<int64_t>(x0 + hw); ++x) c.blend(y, x, col, 1.0f);
  }
  const int n_tree = static_cast<int>(g.randint(int64_t{2}, int64_t{9}));
  for (int k = 0; k < n_tree; ++k) {
    const double r = c.h * g.uniform(0.03, 0.08), cx = g.uniform(0, c.w), cy = horizon - g.uniform(0, r);
    const float col[3] = {30, static_cast<float>(g.uniform(80, 140)), 40};
    for (int64_t y = static_cast<int64_t>(cy - r); y <= static_cast<int64_t>(cy + r); ++y)
      for (int64_t x = static_cast<int64_t>(cx - r); x <= static_cast<int64_t>(cx + r); ++x)
        if ((y - cy) * (y - cy) + (x - cx) * (x - cx) < r * r) c.blend(y, x, col, 1.0f);
  }
}

void noise(Canvas& c, Generator& g) {
  const double s = g.uniform(4, 12);
  for (float& v : c.px) v += static_cast<float>(g.normal() * s);
}

// A round sign at (cy, cx) of radius r: white disk, red ring, two MNIST digits.
void round_sign(Canvas& c, double cy, double cx, double r, const uint8_t* d1, const uint8_t* d2, float blur) {
  const float red[3] = {200, 25, 30}, white[3] = {245, 245, 240}, ink[3] = {20, 20, 25};
  for (int64_t y = static_cast<int64_t>(cy - r - 1); y <= static_cast<int64_t>(cy + r + 1); ++y)
    for (int64_t x = static_cast<int64_t>(cx - r - 1); x <= static_cast<int64_t>(cx + r + 1); ++x) {
      const double d = std::sqrt((y - cy) * (y - cy) + (x - cx) * (x - cx));
      const float a = static_cast<float>(std::clamp(r + 0.5 - d, 0.0, 1.0));
      c.blend(y, x, d > r * 0.78 ? red : white, a * (1 - blur));
    }
  // Digits: each scaled to about 0.9 r high, side by side.
  const int64_t s = std::max<int64_t>(6, static_cast<int64_t>(std::lround(r * 0.95)));
  std::vector<float> src(kDigitPixels), dst(static_cast<size_t>(s * s));
  for (int k = 0; k < 2; ++k) {
    const uint8_t* d = k == 0 ? d1 : d2;
    for (int64_t i = 0; i < kDigitPixels; ++i) src[static_cast<size_t>(i)] = d[i] / 255.0f;
    resize_bilinear(src.data(), kDigitSide, kDigitSide, dst.data(), s, s);
    const double x0 = cx - s + k * s * 0.9 + s * 0.05, y0 = cy - s / 2.0;
    for (int64_t y = 0; y < s; ++y)
      for (int64_t x = 0; x < s; ++x)
        c.blend(static_cast<int64_t>(y0) + y, static_cast<int64_t>(x0) + x, ink,
                dst[static_cast<size_t>(y * s + x)] * (1 - blur));
  }
}

void square_sign(Canvas& c, double cy, double cx, double r) {
  const float blue[3] = {30, 70, 200}, white[3] = {240, 240, 240};
  for (int64_t y = static_cast<int64_t>(cy - r); y <= static_cast<int64_t>(cy + r); ++y)
    for (int64_t x = static_cast<int64_t>(cx - r); x <= static_cast<int64_t>(cx + r); ++x)
      c.blend(y, x, (std::fabs(y - cy) < r * 0.4 && std::fabs(x - cx) < r * 0.15) ? white : blue, 1.0f);
}

void triangle_sign(Canvas& c, double cy, double cx, double r) {
  const float red[3] = {210, 30, 30}, yellow[3] = {240, 200, 60};
  for (int64_t y = static_cast<int64_t>(cy - r); y <= static_cast<int64_t>(cy + r); ++y) {
    const double t = (y - (cy - r)) / (2 * r);  // 0 at the apex
    for (int64_t x = static_cast<int64_t>(cx - r * t); x <= static_cast<int64_t>(cx + r * t); ++x) {
      const bool border = t > 0.82 || std::fabs(x - cx) > r * t - r * 0.22;
      c.blend(y, x, border ? red : yellow, 1.0f);
    }
  }
}

void ball(Canvas& c, double cy, double cx, double r) {
  const float red[3] = {190, 30, 35};
  for (int64_t y = static_cast<int64_t>(cy - r); y <= static_cast<int64_t>(cy + r); ++y)
    for (int64_t x = static_cast<int64_t>(cx - r); x <= static_cast<int64_t>(cx + r); ++x)
      if ((y - cy) * (y - cy) + (x - cx) * (x - cx) < r * r) c.blend(y, x, red, 1.0f);
}

std::string coord(double v, Generator& g) {
  char b[32];
  std::snprintf(b, sizeof(b), "%.2f", v);
  std::string s(b);
  if (g.bernoulli(0.05)) s += "l";  // the real files' trailing junk
  return s;
}

struct Scene {
  std::vector<uint8_t> jpeg;
  std::string annotation;  // after "FILE:"
  int label = 0;           // 0..3, or -1 when the task drops it
};

Scene make_scene(const SignsOptions& o, const DigitSet& digits, uint64_t seed, int64_t i) {
  Generator g(seed, static_cast<uint64_t>(i));
  Canvas c{o.height, o.width, std::vector<float>(static_cast<size_t>(o.height * o.width * 3))};
  background(c, g);
  Scene sc;
  sc.label = static_cast<int>(g.randint(int64_t{0}, int64_t{4}));
  const bool only_occluded = sc.label > 0 && g.bernoulli(0.05);
  std::vector<Box> boxes;
  std::ostringstream ann;
  auto place = [&](double r, Box* out) {
    for (int tries = 0; tries < 200; ++tries) {
      const double cx = g.uniform(r + 2, o.width - r - 2), cy = g.uniform(r + 2, o.height * 0.75);
      Box b{cx - r, cy - r, cx + r, cy + r};
      bool ok = true;
      for (const Box& q : boxes) ok = ok && !b.overlaps(q, 4);
      if (ok) {
        boxes.push_back(b);
        *out = b;
        return true;
      }
    }
    return false;
  };
  auto digit = [&](int cls) {
    const auto& v = digits.by_class[static_cast<size_t>(cls)];
    IPSNET_CHECK(!v.empty(), "the digit source has no ", cls);
    return digits.digit(v[static_cast<size_t>(g.randint(int64_t{0}, static_cast<int64_t>(v.size())))]);
  };
  auto annotate = [&](const char* vis, const Box& b, const char* type, const std::string& name) {
    ann << vis << ", " << coord(b.x2, g) << ", " << coord(b.y2, g) << ", " << coord(b.x1, g) << ", "
        << coord(b.y1, g) << ", " << type << ", " << name << ";";
  };
  auto speed_sign = [&](int tens, const char* vis, float blur) {
    const double r = g.uniform(14, 30);
    Box b;
    if (!place(r, &b)) return;
    round_sign(c, (b.y1 + b.y2) / 2, (b.x1 + b.x2) / 2, r, digit(tens), digit(0), blur);
    annotate(vis, b, "PROHIBITORY", std::to_string(tens) + "0_SIGN");
  };
  static const int kTens[4] = {0, 5, 7, 8};
  if (sc.label > 0) {
    if (only_occluded) {
      speed_sign(kTens[sc.label], "OCCLUDED", 0.5f);
      sc.label = -1;
    } else {
      speed_sign(kTens[sc.label], "VISIBLE", 0.0f);
      if (g.bernoulli(0.2)) speed_sign(kTens[g.randint(int64_t{1}, int64_t{4})], "BLURRED", 0.6f);
    }
    // Distractor signs (annotated, ignored by the task).
    const int n = static_cast<int>(g.randint(int64_t{0}, int64_t{3}));
    for (int k = 0; k < n; ++k) {
      const double r = g.uniform(12, 26);
      Box b;
      if (!place(r, &b)) continue;
      const double cy = (b.y1 + b.y2) / 2, cx = (b.x1 + b.x2) / 2;
      const int kind = static_cast<int>(g.randint(int64_t{0}, int64_t{3}));
      if (kind == 0) {
        static const int kOther[3] = {3, 6, 9};
        const int t = kOther[g.randint(int64_t{0}, int64_t{3})];
        round_sign(c, cy, cx, r, digit(t), digit(0), 0.0f);
        annotate("VISIBLE", b, "PROHIBITORY", std::to_string(t) + "0_SIGN");
      } else if (kind == 1) {
        square_sign(c, cy, cx, r);
        annotate("VISIBLE", b, "INFORMATION", "PEDESTRIAN_CROSSING");
      } else {
        triangle_sign(c, cy, cx, r);
        annotate("SIDE_ROAD", b, "WARNING", "GIVE_WAY");
      }
    }
    if (g.bernoulli(0.3)) ann << "MISC_SIGNS;";
  }
  // Unannotated red balls anywhere (also on EMPTY scenes).
  const int n_ball = static_cast<int>(g.randint(int64_t{0}, int64_t{3}));
  for (int k = 0; k < n_ball; ++k) {
    const double r = g.uniform(8, 22);
    Box b;
    if (place(r, &b)) ball(c, (b.y1 + b.y2) / 2, (b.x1 + b.x2) / 2, r);
  }
  noise(c, g);
  std::vector<uint8_t> px(c.px.size());
  for (size_t k = 0; k < px.size(); ++k) px[k] = static_cast<uint8_t>(std::clamp(std::lround(c.px[k]), 0L, 255L));
  sc.jpeg = encode_jpeg(px.data(), o.height, o.width, 3, o.jpeg_quality);
  sc.annotation = ann.str();
  return sc;
}

}  // namespace

SignsStats generate_signs(const SignsOptions& o, const DigitSource& digits, const std::string& out) {
  IPSNET_CHECK(o.height >= 64 && o.width >= 64, "--style signs: a scene of at least 64 x 64, got ", o.height, "x",
               o.width);
  IPSNET_CHECK(o.n_set1 >= 0 && o.n_set2 >= 0, "--style signs: image counts must be >= 0");
  SignsStats st;
  TempDirectory tmp(out, o.force);
  const int threads = o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int set = 1; set <= 2; ++set) {
    const fs::path dir = fs::path(tmp.path()) / ("Set" + std::to_string(set));
    fs::create_directories(dir);
    const DigitSet& ds = set == 1 ? digits.train : digits.test;
    const int64_t n = set == 1 ? o.n_set1 : o.n_set2;
    // Set1 draws from stream seed+1, Set2 from seed (as the Megapixel MNIST splits).
    const uint64_t seed = static_cast<uint64_t>(o.seed) + (set == 1 ? 1 : 0);
    std::string annotations;
    ordered_parallel_map(
        n, threads, 2 * threads, [&]() { return [&](int64_t i) { return make_scene(o, ds, seed, i); }; },
        [&](int64_t i, Scene sc) {
          char name[64];
          std::snprintf(name, sizeof(name), "%010lldImage%06lld.jpg", static_cast<long long>(1277380000 + set),
                        static_cast<long long>(i));
          write_file_atomic((dir / name).string(), std::string(sc.jpeg.begin(), sc.jpeg.end()));
          annotations += std::string(name) + ":" + sc.annotation + "\n";
          st.bytes += static_cast<int64_t>(sc.jpeg.size());
          ++st.images;
          if (sc.label < 0)
            ++st.dropped;
          else
            ++st.per_class[sc.label];
        });
    write_file_atomic((dir / "annotations.txt").string(), annotations);
  }
  tmp.commit();
  return st;
}

}  // namespace data
}  // namespace ipsnet

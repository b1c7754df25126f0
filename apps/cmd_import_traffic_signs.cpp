// `ipsnet import-traffic-signs STS_DIR OUT`: the Swedish Traffic Signs
// speed-limit task as the IPS reference reads it (data/traffic_signs.h):
// Set1/ and Set2/ with their JPEGs and annotations.txt -> a photograph
// dataset with one task, `sign` (EMPTY, 50_SIGN, 70_SIGN, 80_SIGN), images
// resized to 1200 x 1600 (H x W).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "apps/args.h"
#include "apps/command.h"
#include "data/photo_import.h"
#include "data/traffic_signs.h"
#include "engine/common/error.h"

namespace ipsnet {
namespace app {
namespace {

namespace fs = std::filesystem;

int run_import_traffic_signs(const std::vector<std::string>& raw) {
  std::vector<std::string> args;  // `--resize H W` joined into one value
  for (size_t k = 0; k < raw.size(); ++k) {
    auto num = [](const std::string& s) { return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos; };
    if (raw[k] == "--resize" && k + 2 < raw.size() && num(raw[k + 1]) && num(raw[k + 2])) {
      args.push_back("--resize=" + raw[k + 1] + " " + raw[k + 2]);
      k += 2;
    } else {
      args.push_back(raw[k]);
    }
  }
  ArgParser p("import-traffic-signs",
              "Import the Swedish Traffic Signs speed-limit task (Set1/, Set2/ with annotations.txt) as the IPS "
              "reference reads it.");
  p.add_positional("STS_DIR", "folder with Set1/ and Set2/, each holding its JPEGs and annotations.txt");
  p.add_positional("OUT", "the dataset directory to create");
  p.add_option("seed", "0", "the reference's split seed: train Set{1+((seed+2) mod 2)}, test Set{1+((seed+1) mod 2)}");
  p.add_option("resize", "1200 1600", "H W of the stored images (bilinear, as torchvision's Resize); 0 0 keeps them");
  p.add_option("jpeg-quality", "95", "quality of the re-encoded (resized) JPEGs");
  p.add_option("threads", "0", "decoding threads (0: all cores)");
  p.add_flag("force", "replace an existing OUT");
  p.add_flag("quiet", "no progress lines");
  if (!p.parse(args)) return 0;
  const std::string sts = p.positional(0);
  const int64_t seed = p.get_int64("seed");
  data::ImportImagesOptions o;
  {
    long long h = 0, w = 0;
    const std::string r = p.get_string("resize");
    IPSNET_CHECK(std::sscanf(r.c_str(), "%lld %lld", &h, &w) == 2 || std::sscanf(r.c_str(), "%lldx%lld", &h, &w) == 2,
                 "--resize: give H W, got '", r, "'");
    IPSNET_CHECK(h >= 0 && w >= 0 && (h == 0) == (w == 0), "--resize: ", h, " ", w);
    o.resize_h = h;
    o.resize_w = w;
  }
  o.jpeg_quality = static_cast<int>(p.get_int64("jpeg-quality"));
  const int64_t threads = p.get_int64("threads");
  o.threads = threads > 0 ? static_cast<int>(threads) : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  o.force = p.get_flag("force");
  o.quiet = p.get_flag("quiet");

  std::vector<data::ImportItem> items;
  std::map<std::string, std::vector<int64_t>> counts;
  std::map<std::string, int64_t> dropped;
  for (const char* split : {"train", "test"}) {
    const std::string set = data::sts_set_for(split, seed);
    const fs::path dir = fs::path(sts) / set;
    const fs::path ann = dir / "annotations.txt";
    IPSNET_CHECK(fs::is_regular_file(ann), "'", ann.string(), "' is missing (the STS layout: ", sts,
                 "/Set1/annotations.txt and Set2/annotations.txt beside the extracted JPEGs)");
    std::ifstream in(ann, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    const std::string md5 = data::md5_hex(text);
    const std::string want = data::kStsAnnotationsMd5[set == "Set1" ? 0 : 1];
    if (md5 != want)
      std::printf("note: %s has MD5 %s, the original %s annotations have %s (a different or edited file)\n",
                  ann.string().c_str(), md5.c_str(), set.c_str(), want.c_str());
    // The JPEGs anywhere below the Set folder, by file name.
    std::map<std::string, fs::path> files;
    for (const auto& e : fs::recursive_directory_iterator(dir))
      if (e.is_regular_file()) files.emplace(e.path().filename().string(), e.path());
    std::vector<int64_t>& cnt = counts[split];
    cnt.assign(data::traffic_sign_classes().size(), 0);
    for (const data::TrafficImage& img : data::parse_sts_annotations(text, ann.string())) {
      const int label = data::traffic_label(img);
      if (label < 0) {
        ++dropped[split];
        continue;
      }
      auto f = files.find(img.file);
      IPSNET_CHECK(f != files.end(), "'", ann.string(), "' line ", img.line, ": '", img.file,
                   "' is not in ", dir.string());
      data::ImportItem it;
      it.file = f->second.string();
      it.display = (fs::path(set) / fs::relative(f->second, dir)).string();
      it.where = " (" + set + "/annotations.txt line " + std::to_string(img.line) + ")";
      it.split = split;
      it.labels = {label};
      items.push_back(std::move(it));
      ++cnt[static_cast<size_t>(label)];
    }
  }
  o.extra_json = {{"dataset", "Swedish Traffic Signs (speed limits)"},
                  {"seed", std::to_string(seed)},
                  {"train_set", data::sts_set_for("train", seed)},
                  {"test_set", data::sts_set_for("test", seed)}};
  const data::ImportImagesSummary s = data::write_photo_dataset(
      items, {{"sign", data::traffic_sign_classes()}}, p.positional(1), o, "sts", sts);
  for (const char* split : {"train", "test"}) {
    std::printf("%s %s (%s): %lld images,", p.positional(1).c_str(), split, data::sts_set_for(split, seed).c_str(),
                static_cast<long long>(split == std::string("train") ? s.n_train : s.n_test));
    for (size_t c = 0; c < data::traffic_sign_classes().size(); ++c)
      std::printf(" %s %lld", data::traffic_sign_classes()[c].c_str(), static_cast<long long>(counts[split][c]));
    std::printf("; %lld dropped (no visible speed limit first)\n", static_cast<long long>(dropped[split]));
  }
  return 0;
}

CommandRegistrar reg("import-traffic-signs", "import the Swedish Traffic Signs speed-limit task (Set1/Set2)",
                     run_import_traffic_signs);

}  // namespace
}  // namespace app
}  // namespace ipsnet

// `ipsnet extract-features TILES OUT`: runs a ResNet encoder of ours over every
// tile that `ipsnet wsi-tiles` kept and writes one feature bag per slide
// (data/bag_file.h), for training IPS on bags (`is_image: false`).
//
//   OUT/extract.txt     the settings (a resumed run must match them)
//   OUT/bags/NAME.bag   N x F float32 features, level-0 coordinates, label
//   OUT/bags.csv        name,split,label,n,F,file (rewritten after each slide)
//
// Resumable slide by slide: each bag is written under a temporary name and
// renamed into place when the slide is complete, so an interrupted run keeps
// the finished slides and never a partial one; rerunning the same command
// skips the bags already there.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <string>
#include <vector>

#include "apps/args.h"
#include "apps/command.h"
#include "data/bag_file.h"
#include "data/wsi_slide.h"
#include "data/wsi_tiles.h"
#include "engine/backend/device_select.h"
#include "engine/common/files.h"
#include "engine/engine.h"
#include "models/resnet.h"
#include "models/safetensors.h"

namespace ipsnet {
namespace app {
namespace {

namespace fs = std::filesystem;

struct SlideRow {
  std::string name, split, slide;
  int64_t label = -1, tiles = 0;
};

std::vector<SlideRow> read_slides_csv(const std::string& dir) {
  const std::string path = dir + "/slides.csv";
  std::ifstream in(path);
  IPSNET_CHECK(in.good(), "'", dir, "' has no slides.csv (expected the output directory of `ipsnet wsi-tiles`)");
  std::string line;
  std::getline(in, line);
  IPSNET_CHECK(line.rfind("name,split,label,tiles,slide", 0) == 0, path, ": unexpected header '", line,
               "' (expected name,split,label,tiles,slide)");
  std::vector<SlideRow> rows;
  int lineno = 1;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty()) continue;
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string c; std::getline(ss, c, ',');) f.push_back(c);
    // The slide path may itself hold commas: everything after the 4th.
    IPSNET_CHECK(f.size() >= 5, path, ":", lineno, ": expected 5 fields, got '", line, "'");
    SlideRow r;
    r.name = f[0];
    r.split = f[1];
    try {
      r.label = std::stoll(f[2]);
      r.tiles = std::stoll(f[3]);
    } catch (const std::exception&) {
      IPSNET_FAIL(path, ":", lineno, ": label and tiles must be integers in '", line, "'");
    }
    r.slide = line.substr(f[0].size() + f[1].size() + f[2].size() + f[3].size() + 4);
    rows.push_back(r);
  }
  IPSNET_CHECK(!rows.empty(), path, " lists no slides");
  return rows;
}

std::string fmt_duration(double s) {
  if (!(s >= 0) || !std::isfinite(s)) return "--:--";
  int64_t t = static_cast<int64_t>(s + 0.5);
  char b[32];
  if (t >= 3600) std::snprintf(b, sizeof b, "%lld:%02lld:%02lld", static_cast<long long>(t / 3600),
                               static_cast<long long>(t / 60 % 60), static_cast<long long>(t % 60));
  else std::snprintf(b, sizeof b, "%02lld:%02lld", static_cast<long long>(t / 60), static_cast<long long>(t % 60));
  return b;
}

int run_extract_features(const std::vector<std::string>& args) {
  ArgParser p("extract-features",
              "Encode every kept tile of `ipsnet wsi-tiles` with a ResNet (centre crop, batched) into one feature "
              "bag per slide; resumable slide by slide.");
  p.add_positional("TILES", "output directory of `ipsnet wsi-tiles`");
  p.add_positional("OUT", "output directory of the bags (created, or resumed when it holds a previous run)");
  p.add_option("depth", "50", "ResNet depth: 18, 34 or 50");
  p.add_option("n-res-blocks", "4", "ResNet stages: 4 (ResNet-50 -> 2048 features, 18/34 -> 512) or 2");
  p.add_option("pretrained", "", "safetensors with torchvision ResNet names (scripts/import_torch_weights.py); "
               "empty: random weights (a warning)");
  p.add_option("batch", "32", "tiles per encoder batch");
  p.add_option("crop", "224", "centre crop of each tile in pixels (0: none)");
  p.add_option("normalize", "imagenet", "imagenet | none");
  p.add_option("device", "auto", "auto | cpu | cuda[:N]");
  p.add_option("seed", "0", "seed of the random weights when --pretrained is empty");
  p.add_flag("quiet", "no progress lines");
  p.set_epilog("example: ipsnet extract-features --pretrained resnet50.safetensors /data/c16-tiles /data/c16-bags");
  if (!p.parse(args)) return 0;
  const int depth = static_cast<int>(p.get_int64("depth"));
  const int blocks = static_cast<int>(p.get_int64("n-res-blocks"));
  const int64_t batch = p.get_int64("batch"), crop = p.get_int64("crop");
  const std::string normalize = p.get_string("normalize"), pretrained = p.get_string("pretrained");
  IPSNET_CHECK(depth == 18 || depth == 34 || depth == 50, "--depth ", depth, ": expected 18, 34 or 50");
  IPSNET_CHECK(blocks == 2 || blocks == 4, "--n-res-blocks ", blocks, ": expected 2 or 4");
  IPSNET_CHECK(batch >= 1 && batch <= 65536, "--batch ", batch, ": expected 1 to 65536");
  IPSNET_CHECK(crop >= 0, "--crop ", crop, ": expected a size in pixels or 0");
  IPSNET_CHECK(normalize == "imagenet" || normalize == "none", "--normalize ", normalize,
               ": expected imagenet or none");
  IPSNET_CHECK(data::have_openslide(), "this ipsnet was built without OpenSlide (IPSNET_OPENSLIDE; apt-get install "
               "libopenslide-dev libtiff-dev and reconfigure)");
  const std::string tiles_dir = p.positional(0), out = p.positional(1);
  const bool quiet = p.get_flag("quiet");
  auto rows = read_slides_csv(tiles_dir);

  Generator gen(static_cast<uint64_t>(p.get_int64("seed")));
  ResNet net(ResNetOptions().depth(depth).in_channels(3).n_res_blocks(blocks), gen);
  if (!pretrained.empty()) {
    TensorDict w = safetensors::load_tensors(pretrained);
    TensorDict own = net.state_dict(), filtered;
    for (const auto& it : w)
      if (own.contains(it.first)) filtered.insert(it.first, it.second);  // fc.* of a full model skipped
    IPSNET_CHECK(filtered.size() > 0, "'", pretrained, "' holds no tensor with torchvision ResNet names");
    net.load_state_dict(filtered, false);
  } else {
    std::fprintf(stderr, "extract-features: warning: no --pretrained weights; encoding with a random ResNet-%d "
                 "(seed %lld)\n", depth, static_cast<long long>(p.get_int64("seed")));
  }
  net.eval();
  const Device device = resolve_device(p.get_string("device"));
  net.to(device);
  const int64_t F = net.out_channels();

  // The settings of this run; a resumed run must use the same ones.
  const std::string settings =
      str_cat("encoder resnet", depth, " n_res_blocks ", blocks, " F ", F, " pretrained ",
              pretrained.empty() ? str_cat("none seed ", p.get_int64("seed")) : fs::absolute(pretrained).string(),
              " crop ", crop, " normalize ", normalize, " tiles ", fs::absolute(tiles_dir).string(), "\n");
  fs::create_directories(out + "/bags");
  if (fs::exists(out + "/extract.txt")) {
    std::ifstream in(out + "/extract.txt");
    std::string prev((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    IPSNET_CHECK(prev == settings, "'", out, "' holds bags extracted with other settings (", prev.substr(0, prev.size() - 1),
                 "); use a new output directory");
  } else {
    write_file_atomic(out + "/extract.txt", settings);
  }

  int64_t total = 0;
  for (const auto& r : rows) total += r.tiles;
  std::string index = "name,split,label,n,F,file\n";
  int64_t done_tiles = 0, encoded = 0, resumed = 0;
  const auto t0 = std::chrono::steady_clock::now();
  auto last = t0;
  const bool tty = isatty(fileno(stdout));
  for (size_t k = 0; k < rows.size(); ++k) {
    const SlideRow& r = rows[k];
    const std::string bag_path = out + "/bags/" + r.name + ".bag";
    if (fs::exists(bag_path)) {
      bool ok = false;
      try {
        auto b = data::BagReader::open(bag_path);
        ok = b.info().n == r.tiles && b.info().F == F;
      } catch (const Error&) {
      }
      if (ok) {
        ++resumed;
        done_tiles += r.tiles;
        index += str_cat(r.name, ",", r.split, ",", r.label, ",", r.tiles, ",", F, ",bags/", r.name, ".bag\n");
        continue;
      }
      std::printf("extract-features: %s: the existing bag does not match (%s); extracting it again\n", r.name.c_str(),
                  bag_path.c_str());
    }
    data::SlideTiles t = data::read_tiles_file(tiles_dir + "/tiles/" + r.name + ".tiles");
    IPSNET_CHECK(static_cast<int64_t>(t.tiles.size()) == r.tiles, tiles_dir, "/slides.csv says ", r.tiles,
                 " tiles for ", r.name, " but its tile file holds ", t.tiles.size());
    auto slide = data::WsiSlide::open(t.slide_path);
    const int64_t side = crop > 0 ? crop : t.out_size;
    IPSNET_CHECK(side <= t.out_size, "--crop ", crop, " is larger than the tiles of ", r.name, " (", t.out_size, " px)");
    const int64_t n = static_cast<int64_t>(t.tiles.size());
    std::vector<float> feats(static_cast<size_t>(n * F));
    std::vector<int64_t> coords(static_cast<size_t>(n * 2));
    for (int64_t i = 0; i < n; ++i) coords[2 * i] = t.tiles[i].x, coords[2 * i + 1] = t.tiles[i].y;
    // The next batch's tiles are read on a second thread while the encoder runs.
    auto read_batch = [&](int64_t b0) {
      int64_t m = std::min(batch, n - b0);
      Tensor x = Tensor::empty({m, 3, side, side});
      float* d = x.data<float>();
      for (int64_t i = 0; i < m; ++i) data::read_tile(*slide, t, t.tiles[b0 + i], crop, normalize, d + i * 3 * side * side);
      return x;
    };
    std::future<Tensor> next = std::async(std::launch::async, read_batch, 0);
    for (int64_t b0 = 0; b0 < n; b0 += batch) {
      Tensor x = next.get();
      const int64_t m = x.size(0);
      if (b0 + batch < n) next = std::async(std::launch::async, read_batch, b0 + batch);
      Tensor y;
      {
        NoGradGuard ng;
        y = net.forward(x.to(device)).to(Device::cpu()).contiguous();  // (m, F)
      }
      std::copy_n(y.data<float>(), m * F, feats.data() + b0 * F);
      done_tiles += m;
      encoded += m;
      auto now = std::chrono::steady_clock::now();
      if (!quiet && (std::chrono::duration<double>(now - last).count() >= (tty ? 0.5 : 5.0) || done_tiles == total)) {
        last = now;
        double el = std::chrono::duration<double>(now - t0).count();
        double rate = el > 0 ? encoded / el : 0;
        std::printf("%sextract-features: %lld/%lld tiles, %.1f tiles/s, ETA %s, slide %zu/%zu %s%s", tty ? "\r" : "",
                    static_cast<long long>(done_tiles), static_cast<long long>(total), rate,
                    fmt_duration(rate > 0 ? (total - done_tiles) / rate : -1).c_str(), k + 1, rows.size(),
                    r.name.c_str(), tty ? "   " : "\n");
        std::fflush(stdout);
      }
    }
    data::BagInfo info;
    info.name = r.name;
    info.split = r.split;
    info.n = n;
    info.F = F;
    info.label = r.label;
    info.level = t.level;
    info.extent0 = t.extent0;
    info.read_size = t.read_size;
    info.out_size = t.out_size;
    data::write_bag(bag_path, info, feats.data(), coords.data());
    index += str_cat(r.name, ",", r.split, ",", r.label, ",", n, ",", F, ",bags/", r.name, ".bag\n");
    write_file_atomic(out + "/bags.csv", index);
  }
  write_file_atomic(out + "/bags.csv", index);
  double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!quiet && tty) std::printf("\n");
  std::printf("extract-features: %zu bags of F %lld -> %s (%lld tiles encoded in %s, %.1f tiles/s; %lld slides "
              "already done)\n",
              rows.size(), static_cast<long long>(F), out.c_str(), static_cast<long long>(encoded),
              fmt_duration(el).c_str(), el > 0 ? encoded / el : 0.0, static_cast<long long>(resumed));
  return 0;
}

CommandRegistrar reg("extract-features", "encode whole-slide tiles into feature bags (ResNet, resumable)",
                     run_extract_features);

}  // namespace
}  // namespace app
}  // namespace ipsnet

// `ipsnet attention-maps`: where a checkpoint looks, for any images and patch grid.
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "apps/args.h"
#include "apps/command.h"
#include "data/png_writer.h"
#include "train/attention_map.h"
#include "train/trainer.h"

namespace ipsnet {
namespace app {
namespace {

std::vector<int64_t> parse_indices(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    if (tok.empty()) continue;
    size_t dash = tok.find('-');
    try {
      if (dash != std::string::npos && dash > 0) {
        int64_t a = std::stoll(tok.substr(0, dash)), b = std::stoll(tok.substr(dash + 1));
        IPSNET_CHECK(a <= b, "--images: range '", tok, "' is empty");
        // Bounded before it is built (one PNG per index).
        IPSNET_CHECK(a >= 0 && b - a < 1000000 && out.size() + static_cast<size_t>(b - a) < 1000000, "--images: range '",
                     tok, "' asks for more than 1000000 images (or a negative index)");
        for (int64_t i = a; i <= b; ++i) out.push_back(i);
      } else {
        size_t pos = 0;
        out.push_back(std::stoll(tok, &pos));
        IPSNET_CHECK(pos == tok.size(), "--images: '", tok, "' is not an index");
      }
    } catch (const std::logic_error&) {
      IPSNET_FAIL("--images: '", tok, "' is not an index or a range like 3-7");
    }
  }
  IPSNET_CHECK(!out.empty(), "--images: no image index in '", s, "'");
  return out;
}

int run_attention_maps(const std::vector<std::string>& args) {
  ArgParser p("attention-maps", "Draw where a checkpoint looks: selection scores over the image, selected patches outlined.");
  p.add_option("checkpoint", "", "checkpoint written by `ipsnet train` or by scripts/import_torch_weights.py");
  p.add_option("config", "", "YAML config of the model, for weights without an embedded one (e.g. from PyTorch); "
                             "when given it replaces the checkpoint's config");
  p.add_option("data", "", "dataset directory (default: the checkpoint's)");
  p.add_option("split", "test", "test | train");
  p.add_option("images", "0-3", "image indices: 0,5,9 or ranges 0-7");
  p.add_option("out", "attention_maps", "output directory for the PNGs");
  p.add_option("patch-size", "", "patch grid: patch size (default: the checkpoint's)");
  p.add_option("patch-stride", "", "patch grid: stride (default: the checkpoint's)");
  p.add_option("M", "", "patches to select (default: the checkpoint's M)");
  p.add_option("device", "", "auto | cpu | cuda[:N]");
  p.add_option("max-side", "1500", "bound on the larger side of each PNG (0: full resolution)");
  p.add_flag("all-scores", "also score every patch in one pass over all N and draw that heat map");
  p.add_flag("tiles", "also write a tile sheet of the selected patches per image");
  if (!p.parse(args)) return 0;
  IPSNET_CHECK(p.is_set("checkpoint"), "attention-maps: --checkpoint is required");
  std::string split = p.get_string("split");
  IPSNET_CHECK(split == "test" || split == "train", "attention-maps: --split must be test or train, got '", split, "'");
  std::vector<std::string> ov;
  if (p.is_set("data")) ov.push_back("data_dir=" + p.get_string("data"));
  if (p.is_set("device")) ov.push_back("device=" + p.get_string("device"));
  if (p.is_set("patch-size")) ov.push_back("patch_size=" + p.get_string("patch-size"));
  if (p.is_set("patch-stride")) ov.push_back("patch_stride=" + p.get_string("patch-stride"));
  if (p.is_set("M")) ov.push_back("M=" + p.get_string("M"));
  ov.push_back("eval_split=" + split);
  std::unique_ptr<train::Trainer> t;
  try {
    t = train::Trainer::from_checkpoint(p.get_string("checkpoint"), ov, true, p.get_string("config"));
  } catch (const Error& e) {
    if (p.is_set("config") && std::string(e.what()).find("load_state_dict") != std::string::npos)
      throw Error("attention-maps: the architecture in --config '" + p.get_string("config") +
                  "' does not match the tensors of '" + p.get_string("checkpoint") + "': " + e.what());
    throw;
  }
  std::vector<int64_t> ids = parse_indices(p.get_string("images"));
  const std::string out = p.get_string("out");
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  IPSNET_CHECK(!ec, "attention-maps: cannot create '", out, "': ", ec.message());
  const data::DataSource& src = t->source(split);
  const int64_t C = src.channels();
  IPSNET_CHECK(src.has_pixels() && (C == 1 || C == 3), "attention-maps: draws grayscale or RGB images; the ",
               src.kind(), " data has ", C, " channel(s)");
  for (int64_t id : ids) {
    IPSNET_CHECK(id >= 0 && id < src.size(), "attention-maps: image index ", id, " out of range for the ", split,
                 " split of ", src.size(), " images");
    const PatchGrid g = src.grid(id);
    std::vector<float> image(static_cast<size_t>(C * g.height * g.width));
    train::Attention r = t->attend(split, {id}, p.get_flag("all-scores"));
    src.read_image(id, image.data());
    // Photographs normalised for the model (normalize: imagenet) are drawn as they look.
    train::denormalize_for_display(image.data(), C, g.height * g.width, t->config().normalize);
    train::AttentionMapInput in;
    in.image = image.data();
    in.channels = C;
    in.grid = g;
    in.selected = r.idx.to_vector<int64_t>();
    if (r.scores.defined()) in.selected_scores = r.scores.to_vector<float>();
    if (r.all_scores.defined()) in.all_scores = r.all_scores.to_vector<float>();
    int64_t h, w;
    std::vector<uint8_t> rgb = train::render_attention_map(in, p.get_int64("max-side"), &h, &w);
    std::string path = out + "/" + split + "_" + std::to_string(id) + ".png";
    data::write_png(path, w, h, 3, rgb);
    std::printf("%s\n", path.c_str());
    if (p.get_flag("tiles")) {
      std::vector<uint8_t> tiles = train::render_tile_sheet(in, &h, &w);
      std::string tpath = out + "/" + split + "_" + std::to_string(id) + "_tiles.png";
      data::write_png(tpath, w, h, static_cast<int>(C), tiles);
      std::printf("%s\n", tpath.c_str());
    }
  }
  return 0;
}

CommandRegistrar reg("attention-maps", "draw a checkpoint's patch scores and selections as PNGs", run_attention_maps);

}  // namespace
}  // namespace app
}  // namespace ipsnet

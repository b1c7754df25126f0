// method: cnn -- the traditional baseline: a ResNet of ours over the whole
// image (at full size or downscaled by cnn_scale), global average pooling,
// one Linear head per task. Its memory grows with the image: the method
// estimates a step's memory before the first batch is allocated and says in
// one line when it will not fit.
//
// Parameter names: `encoder.*` (torchvision ResNet names, as IPS's encoder;
// pretrained_path loads torchvision weights) and `output_layers.<task>.0.*`.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "engine/backend/device_select.h"
#include "models/resnet.h"
#include "models/safetensors.h"
#include "layers/mode_guard.h"
#include "train/explain.h"
#include "train/images.h"
#include "train/method.h"
#include "train/methods/heads.h"

namespace ipsnet {
namespace train {
namespace {

/// The network: encoder (ResNet, pooled) and heads.
class CNNNet : public Module {
 public:
  CNNNet(const Config& cfg, int64_t in_channels, Generator& gen) : Module("CNNNet") {
    const int depth = cfg.enc_type == "resnet34" ? 34 : cfg.enc_type == "resnet50" ? 50 : 18;
    resnet_ = register_module("encoder", std::make_shared<ResNet>(ResNetOptions()
                                                                      .depth(depth)
                                                                      .in_channels(in_channels)
                                                                      .n_res_blocks(static_cast<int>(cfg.n_res_blocks)),
                                                                  gen));
    heads_ = make_task_heads(cfg.tasks, resnet_->out_channels(), gen);
    register_module("output_layers", heads_.module);
  }
  /// x: (B, C, h, w) -> task -> logits (B, n_class)
  std::map<std::string, Tensor> logits(const Tensor& x) { return apply_heads(heads_, resnet_->forward(x)); }

  std::shared_ptr<ResNet> resnet_;
  TaskHeads heads_;
};

// Bytes the device can give a step: the config's limit, else the CPU's
// MemAvailable or the CUDA device's total memory (from the device probe).
int64_t device_memory_bytes(const Config& cfg, Device device) {
  if (cfg.memory_limit_mib > 0) return cfg.memory_limit_mib * 1048576;
  if (device.is_cpu()) {
    std::ifstream f("/proc/meminfo");
    std::string key;
    int64_t kb = 0;
    std::string unit;
    while (f >> key >> kb >> unit)
      if (key == "MemAvailable:") return kb * 1024;
    return 0;  // unknown: no check
  }
  const DeviceProbe& p = probe_devices();
  const std::string tag = str_cat("cuda:", device.index, " ");
  for (const std::string& line : p.devices) {
    if (line.rfind(tag, 0) != 0) continue;
    size_t g = line.find(" GiB");
    if (g == std::string::npos) return 0;
    size_t s = line.rfind(' ', g - 1);
    return static_cast<int64_t>(std::stod(line.substr(s + 1, g - s - 1)) * 1073741824.0);
  }
  return 0;
}

std::string gib(double bytes) {
  std::ostringstream os;
  os.precision(bytes < 1073741824.0 ? 3 : 4);
  if (bytes < 1073741824.0)
    os << bytes / 1048576.0 << " MiB";
  else
    os << bytes / 1073741824.0 << " GiB";
  return os.str();
}

class CNNMethod : public Method {
 public:
  explicit CNNMethod(const MethodContext& ctx) : cfg_(ctx.cfg), device_(ctx.device) {
    const data::DataSource& src = ctx.data;
    IPSNET_CHECK(src.has_pixels(), "method cnn: the ", src.kind(), " data source has no pixels (feature bags)");
    IPSNET_CHECK(cfg_.n_chan_in == src.channels(), "config key 'n_chan_in': ", cfg_.n_chan_in, ", but the ",
                 src.kind(), " images have ", src.channels(), " channel(s)");
    IPSNET_CHECK(!cfg_.eager, "method cnn: reads its whole images itself; eager loading would hold them twice: "
                 "set eager: false");
    IPSNET_CHECK(cfg_.cnn_scale > 0 && cfg_.cnn_scale <= 1, "config key 'cnn_scale': expected in (0, 1], got ",
                 cfg_.cnn_scale);
    IPSNET_CHECK(cfg_.memory_limit_mib >= 0, "config key 'memory_limit_mib': expected >= 0, got ",
                 cfg_.memory_limit_mib);
    net_ = std::make_shared<CNNNet>(cfg_, src.channels(), ctx.init_gen);
    if (!cfg_.pretrained_path.empty()) load_pretrained(safetensors::load_tensors(cfg_.pretrained_path));
    if (cfg_.freeze != "none") net_->resnet_->freeze_backbone(cfg_.freeze == "all" ? 0 : 1);
    net_->resnet_->set_recompute(cfg_.recompute_activations);
    if (device_.is_cuda()) net_->to(device_);
    if (src.size() > 0) {
      const PatchGrid g = src.grid(0);
      check_memory(g.height, g.width);
    }
  }
  std::string name() const override { return "cnn"; }
  Module& model() override { return *net_; }

  // The whole images, scaled, onto the device (nothing else to select).
  void select(Batch& batch, bool, Generator&) override {
    const PatchGrid g = batch.source().grid(batch.ids()[0]);
    if (g.height != checked_h_ || g.width != checked_w_) check_memory(g.height, g.width);
    batch.selected_patches = read_images(batch.source(), batch.ids(), cfg_.cnn_scale, device_);
    batch.selected_idx = Tensor();
  }

  // Grad-CAM++, Grad-CAM and CAM of the encoder's last stage (train/explain.h)
  // on the images read as select() reads them, resized to the full image.
  std::vector<std::string> explanations() const override { return {"gradcam_pp", "gradcam", "cam"}; }

  Tensor explain(Batch& batch, const std::string& kind, const std::string& task, const std::vector<int64_t>& classes,
                 Generator&) override {
    check_explanation_kind(name(), explanations(), kind);
    auto head = net_->heads_.linear.find(task);
    if (head == net_->heads_.linear.end()) {
      std::string known;
      for (const auto& kv : net_->heads_.linear) known += str_cat(known.empty() ? "" : ", ", kv.first);
      IPSNET_FAIL("explain: unknown task '", task, "' (tasks: ", known, ")");
    }
    const PatchGrid g = batch.source().grid(batch.ids()[0]);
    Tensor x = read_images(batch.source(), batch.ids(), cfg_.cnn_scale, device_);
    TrainModeGuard eval_mode(*net_, false);
    return cnn_explanation(*net_->resnet_, *head->second, x, kind, classes, g.height, g.width);
  }

  MethodOutput forward(Batch& batch, const std::map<std::string, Tensor>& targets) override {
    IPSNET_CHECK(batch.selected_patches.defined(), "cnn: forward before select");
    MethodOutput out;
    out.logits = net_->logits(batch.selected_patches);
    if (!targets.empty()) out.loss = mean_task_loss(net_->heads_, out.logits, targets, &out.losses);
    batch.selected_patches = Tensor();  // the images are no longer needed once the graph holds what it saves
    return out;
  }

 private:
  void load_pretrained(const TensorDict& weights) {
    // As IPS's encoder: keep the fresh conv1 when the channel count differs; skip fc.*.
    TensorDict own = net_->resnet_->state_dict(), filtered;
    for (const auto& it : weights) {
      if (!own.contains(it.first)) continue;
      if (own.at(it.first).shape() != it.second.shape() && it.first == "conv1.weight") continue;
      filtered.insert(it.first, it.second);
    }
    net_->resnet_->load_state_dict(filtered, false);
  }

  // Peak bytes above the current allocation of one training step on one
  // s x s image (forward, backward; the state of the network restored).
  double probe_step(int64_t s) {
    TensorDict saved;
    for (const auto& it : net_->state_dict()) saved.insert(it.first, it.second.clone());
    const bool was_training = net_->is_training();
    net_->train();
    Generator g(7);
    Tensor x = Tensor::rand({1, cfg_.n_chan_in, s, s}, g).to(device_);
    const int64_t base = memory_stats(device_).allocated_bytes;
    reset_peak_memory(device_);
    {
      std::map<std::string, Tensor> logits = net_->logits(x);
      Tensor total;
      for (auto& kv : logits) total = total.defined() ? total + ops::sum(kv.second) : ops::sum(kv.second);
      total.backward();
    }
    const double peak = static_cast<double>(memory_stats(device_).peak_allocated_bytes - base);
    net_->zero_grad();
    net_->load_state_dict(saved, true);
    net_->train(was_training);
    return peak;
  }

  // A step's memory, estimated before anything of the batch is allocated:
  // the activations of a fully convolutional network grow linearly with the
  // pixels, so two probes (64^2 and 128^2 images) give the fixed part
  // (gradients, workspaces) and the bytes per pixel; the step on B images of
  // h x w then needs fixed + B*h*w*per_pixel, plus the optimizer's state,
  // the batch itself and one full-size image read on the host.
  void check_memory(int64_t H, int64_t W) {
    checked_h_ = H;
    checked_w_ = W;
    const auto [h, w] = scaled_size(H, W, cfg_.cnn_scale);
    IPSNET_CHECK(h >= 32 && w >= 32, "config key 'cnn_scale': a ", H, "x", W, " image scaled by ", cfg_.cnn_scale,
                 " is ", h, "x", w, ", smaller than the ResNet's 32x32 reduction");
    const double p1 = probe_step(64), p2 = probe_step(128);
    const double per_pixel = std::max(0.0, (p2 - p1) / (128.0 * 128 - 64.0 * 64));
    const double fixed = std::max(0.0, p1 - per_pixel * 64.0 * 64);
    const double B = static_cast<double>(cfg_.B), C = static_cast<double>(cfg_.n_chan_in);
    const double params = static_cast<double>(net_->num_parameters()) * 4.0;
    const double act = B * static_cast<double>(h * w) * per_pixel;
    // The optimizer's state per parameter: two moments (adamw, adam), one
    // momentum buffer (sgd with momentum), none (plain sgd).
    const double slots = cfg_.optimizer == "sgd" ? (cfg_.momentum > 0 ? 1.0 : 0.0) : 2.0;
    const double need = fixed + act + slots * params + B * C * h * w * 4.0 + C * H * W * 4.0;
    const int64_t have = device_memory_bytes(cfg_, device_);
    // 10 % headroom: the two-probe fit came out 3-4 % below the measured peaks
    // (1500x1500: 6.59 GiB estimated, 6.86 GiB measured; 375x375: 437 vs 449 MiB).
    IPSNET_CHECK(have <= 0 || 1.1 * need <= static_cast<double>(have), "method cnn: a training step on B = ", cfg_.B,
                 " images of ", H, "x", W, cfg_.cnn_scale != 1.0 ? str_cat(" scaled to ", h, "x", w) : "",
                 " needs about ", gib(need), " (activations ", gib(act), " at ", static_cast<int64_t>(per_pixel),
                 " bytes per pixel and image), but ", device_.str(), " has ", gib(static_cast<double>(have)),
                 cfg_.memory_limit_mib > 0 ? " (memory_limit_mib)" : " available",
                 ": lower B or cnn_scale, or use method ips");
  }

  Config cfg_;
  Device device_;
  std::shared_ptr<CNNNet> net_;
  int64_t checked_h_ = -1, checked_w_ = -1;
};

}  // namespace

std::unique_ptr<Method> make_cnn_method(const MethodContext& ctx) { return std::make_unique<CNNMethod>(ctx); }

}  // namespace train
}  // namespace ipsnet

// method: ats -- attention sampling (Katharopoulos and Fleuret, ICML 2019;
// SPEC section 7; docs/ats.md): an attention network on a low-resolution view
// picks n_patches positions, the patches there are cut from the
// high-resolution image, a feature network encodes them, and the
// expectation of the features under the attention (estimated from the
// samples, with the original's gradients) feeds one Linear head per task.
//
// select  (no gradients) the attention on the low-resolution view, the
//         positions drawn from it with the step's generator (training; at
//         evaluation too with ats_eval: sample, or the top n with topk), and
//         the patches at those positions
// forward the attention again with gradients (the attention network is small
//         and has no BatchNorm or dropout: the same values), its values at
//         the drawn positions, the features, the estimator, the heads, the
//         task losses plus the entropy regulariser ("_entropy")
//
// Parameter names: attention.*, feature.* (models/ats.h), output_layers.<task>.0.*.
#include "models/ats.h"
#include "train/images.h"
#include "train/method.h"
#include "train/methods/heads.h"

namespace ipsnet {
namespace train {
namespace {

class ATSModel : public Module {
 public:
  ATSModel(const Config& cfg, int64_t in_channels, Generator& gen) : Module("ATSModel") {
    ATSNetOptions o;
    o.in_channels(in_channels)
        .features(cfg.ats_features == "ats" ? std::string("ats") : cfg.enc_type)
        .n_res_blocks(static_cast<int>(cfg.n_res_blocks));
    net_ = std::make_shared<ATSNet>(o, gen);
    // The children of ATSNet directly under the model: attention.*, feature.*.
    for (const auto& [name, child] : net_->named_children()) register_module(name, child);
    heads_ = make_task_heads(cfg.tasks, net_->feature_dim(), gen);
    for (auto& [task, lin] : heads_.linear) {  // Keras Dense: glorot uniform, zero bias
      glorot_uniform_(lin->weight_, gen);
      NoGradGuard ng;
      lin->bias_.copy_(Tensor::zeros(lin->bias_.shape()));
    }
    register_module("output_layers", heads_.module);
  }
  std::shared_ptr<ATSNet> net_;
  TaskHeads heads_;
};

class ATSMethod : public Method {
 public:
  explicit ATSMethod(const MethodContext& ctx) : cfg_(ctx.cfg), device_(ctx.device) {
    const data::DataSource& src = ctx.data;
    IPSNET_CHECK(src.has_pixels(), "method ats: the ", src.kind(), " data source has no pixels (feature bags)");
    IPSNET_CHECK(cfg_.n_chan_in == src.channels(), "config key 'n_chan_in': ", cfg_.n_chan_in, ", but the ",
                 src.kind(), " images have ", src.channels(), " channel(s)");
    IPSNET_CHECK(cfg_.scale >= 0 && cfg_.scale <= 1, "config key 'scale': expected in (0, 1] (or 0: the stored "
                 "low-resolution view), got ", cfg_.scale);
    IPSNET_CHECK(!cfg_.eager, "method ats: reads its low-resolution views and patches itself; eager loading "
                 "would only hold whole images it never uses: set eager: false");
    IPSNET_CHECK(cfg_.n_patches >= 1, "config key 'n_patches': expected >= 1, got ", cfg_.n_patches);
    IPSNET_CHECK(cfg_.ats_eval == "sample" || cfg_.ats_eval == "topk",
                 "config key 'ats_eval': expected sample or topk, got '", cfg_.ats_eval, "'");
    IPSNET_CHECK(cfg_.ats_features == "ats" || cfg_.ats_features == "resnet",
                 "config key 'ats_features': expected ats or resnet, got '", cfg_.ats_features, "'");
    IPSNET_CHECK(cfg_.scale > 0 || src.has_lowres(), "method ats: the ", src.kind(),
                 " dataset stores no low-resolution view: set the config key 'scale' (e.g. 0.12) to downscale the "
                 "images on the fly, or make the data with `ipsnet generate-data --style ats`");
    if (src.size() > 0) {
      const PatchGrid g = src.grid(0);
      const auto [h, w] = cfg_.scale > 0 ? scaled_size(g.height, g.width, cfg_.scale) : src.lowres_size(0);
      IPSNET_CHECK(h >= 1 && w >= 1, "config key 'scale': ", cfg_.scale, " makes the low-resolution view of a ",
                   g.height, "x", g.width, " image ", h, "x", w, ", smaller than one patch position");
      IPSNET_CHECK(cfg_.ats_replace || cfg_.n_patches <= h * w, "config key 'n_patches': ", cfg_.n_patches,
                   " is larger than the ", h * w, " positions of the ", h, "x", w,
                   " low-resolution view (sampling without replacement; set ats_replace: true or a larger scale)");
    }
    model_ = std::make_shared<ATSModel>(cfg_, src.channels(), ctx.init_gen);
    if (device_.is_cuda()) model_->to(device_);
  }
  std::string name() const override { return "ats"; }
  Module& model() override { return *model_; }

  void select(Batch& batch, bool training, Generator& gen) override {
    NoGradGuard ng;
    Tensor x_low = lowres(batch);
    Tensor a = model_->net_->attention(x_low);  // (B, K)
    const int64_t h = x_low.size(2), w = x_low.size(3);
    Tensor pos = (training || cfg_.ats_eval == "sample") ? ats::sample(a, cfg_.n_patches, cfg_.ats_replace, gen)
                                                         : ats::top_positions(a, cfg_.n_patches);
    const PatchGrid g = batch.source().grid(batch.ids()[0]);
    auto corners = ats::patch_corners(pos.to_vector<int64_t>(), h, w, g.height, g.width, cfg_.patch_size);
    batch.selected_patches = read_patches_at(batch.source(), batch.ids(), corners, cfg_.patch_size, device_);
    batch.selected_idx = pos;
  }

  MethodOutput forward(Batch& batch, const std::map<std::string, Tensor>& targets) override {
    IPSNET_CHECK(batch.selected_patches.defined() && batch.selected_idx.defined(), "ats: forward before select");
    const int64_t B = batch.size(), n = batch.selected_idx.size(1);
    Tensor a = model_->net_->attention(lowres(batch));                       // (B, K)
    Tensor a_s = ops::gather(a, 1, batch.selected_idx.to(device_));          // (B, n)
    Tensor f = model_->net_->features(batch.selected_patches).reshape({B, n, -1});  // (B, n, D)
    Tensor F = ats::expected(a_s, f, cfg_.ats_replace);                      // (B, D)
    MethodOutput out;
    out.logits = apply_heads(model_->heads_, F);
    if (!targets.empty()) {
      out.loss = mean_task_loss(model_->heads_, out.logits, targets, &out.losses);
      if (cfg_.regularizer_strength != 0) {
        Tensor r = ats::entropy_regularizer(a, cfg_.regularizer_strength);
        out.losses["_entropy"] = r.item();
        out.loss = out.loss + r;
      }
    }
    out.selected = batch.selected_idx;
    lowres_ = Tensor();
    lowres_ids_.clear();
    return out;
  }

  // Where it looks, in the instances of the source (the Method contract,
  // so that `ipsnet attention-maps` draws it on the patch grid): the grid
  // cells holding the centres of the drawn patches (or of the top n with
  // ats_eval: topk), each cell's score the attention mass of the positions
  // whose centres it holds; all_scores: that mass for every cell (B, N).
  // (The attention over the positions themselves: ATSNet::attention.)
  // The explanation map: the attention mass of every grid cell (attend's
  // all_scores) spread over its pixels (Method::explain's default).
  std::vector<std::string> explanations() const override { return {"attention"}; }

  Attention attend(Batch& batch, bool all_scores, Generator& gen) override {
    NoGradGuard ng;
    Tensor x_low = lowres(batch);
    Tensor a = model_->net_->attention(x_low).to(Device::cpu()).contiguous();  // (B, K)
    const int64_t B = a.size(0), K = a.size(1), h = x_low.size(2), w = x_low.size(3);
    Tensor pos = cfg_.ats_eval == "sample" ? ats::sample(a, cfg_.n_patches, cfg_.ats_replace, gen)
                                           : ats::top_positions(a, cfg_.n_patches);
    const PatchGrid g = batch.source().grid(batch.ids()[0]);
    const int64_t N = g.count(), n = pos.size(1);
    std::vector<int64_t> all(static_cast<size_t>(K));
    for (int64_t k = 0; k < K; ++k) all[static_cast<size_t>(k)] = k;
    const std::vector<int64_t> cell_of = ats::grid_cells(all, h, w, g);
    std::vector<float> mass(static_cast<size_t>(B * N), 0.0f);
    const std::vector<float> av = a.to_vector<float>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t k = 0; k < K; ++k) mass[static_cast<size_t>(b * N + cell_of[static_cast<size_t>(k)])] += av[static_cast<size_t>(b * K + k)];
    std::vector<int64_t> idx = pos.to_vector<int64_t>();
    std::vector<float> scores(idx.size());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < n; ++j) {
        int64_t& v = idx[static_cast<size_t>(b * n + j)];
        v = cell_of[static_cast<size_t>(v)];
        scores[static_cast<size_t>(b * n + j)] = mass[static_cast<size_t>(b * N + v)];
      }
    Attention r;
    r.idx = Tensor::from_vector(idx, {B, n});
    r.scores = Tensor::from_vector(scores, {B, n});
    if (all_scores) r.all_scores = Tensor::from_vector(mass, {B, N});
    r.n_encoded = B * n;
    lowres_ = Tensor();
    lowres_ids_.clear();
    return r;
  }

 private:
  // The batch's low-resolution views, read once per select/forward pair.
  Tensor lowres(const Batch& batch) {
    if (!lowres_.defined() || lowres_ids_ != batch.ids()) {
      lowres_ = read_lowres_views(batch.source(), batch.ids(), cfg_.scale, device_);
      lowres_ids_ = batch.ids();
    }
    return lowres_;
  }

  Config cfg_;
  Device device_;
  std::shared_ptr<ATSModel> model_;
  Tensor lowres_;                   // (B, C, h, w) of lowres_ids_
  std::vector<int64_t> lowres_ids_;
};

}  // namespace

std::unique_ptr<Method> make_ats_method(const MethodContext& ctx) { return std::make_unique<ATSMethod>(ctx); }

}  // namespace train
}  // namespace ipsnet

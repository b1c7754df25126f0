// Proxy Attention (docs/proxy_attention.md; the thesis of seed 004, SPEC
// section 7): at the proxy steps of a schedule such as [20, "p", 19], the
// training images the model gets wrong (or has the highest loss on) are
// explained by the method's explanation map (Grad-CAM++, Grad-CAM, CAM,
// or IPS's and ATS's own attention), and where the min-max normalised map M
// exceeds the threshold tau their pixels change:
//   blended:  out = where(M > tau, (1 - lambda * M) * x, x)
//   constant: out = where(M > tau, v, x), v = 0 or the image's mean, max, min.
// The changed images ("proxies") are stored as an extra split of the run
// directory, RUN/proxy/cycle_<k>/ (images.npy (n, C, H, W) float32,
// origin.csv with each proxy's origin image id, sheet.png: original, map and
// proxy side by side), and join the training set (augment) or take their
// originals' place (replace) from the next epoch on.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/source.h"
#include "engine/engine.h"
#include "train/config.h"
#include "train/method.h"

namespace ipsnet {
namespace train {

/// One proxy step's images, read from RUN/proxy/cycle_<k>/.
class ProxyStore {
 public:
  /// Opens dir (images.npy and origin.csv); one line naming the file when
  /// anything is missing, truncated or inconsistent.
  explicit ProxyStore(const std::string& dir);
  ~ProxyStore();
  ProxyStore(const ProxyStore&) = delete;
  ProxyStore& operator=(const ProxyStore&) = delete;
  int64_t size() const { return static_cast<int64_t>(origin_.size()); }
  /// The training image proxy r was made from.
  int64_t origin(int64_t r) const { return origin_[static_cast<size_t>(r)]; }
  /// dst (C, H, W).
  void read(int64_t r, float* dst) const;
  int64_t channels() const { return C_; }
  int64_t height() const { return H_; }
  int64_t width() const { return W_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_, path_;
  int fd_ = -1;
  int64_t C_ = 0, H_ = 0, W_ = 0, data_offset_ = 0;
  std::vector<int64_t> origin_;
};

/// The training split as the proxy steps so far have made it: the first
/// n_base images of `base`, plus the proxies of the active steps (augment),
/// or with each proxy in its origin's place (replace; a later step's proxy
/// wins). Labels are the origin's. Thread-safe reads, as every source.
class ProxyTrainSource : public data::DataSource {
 public:
  ProxyTrainSource(data::DataSource& base, int64_t n_base, std::string mode);
  /// The steps whose proxies are in the set (all so far, or only the latest
  /// with clear_every_step).
  void set_stores(std::vector<std::shared_ptr<const ProxyStore>> stores);
  int64_t proxies() const { return n_proxies_; }

  std::string kind() const override { return base_.kind(); }
  std::string describe() const override;
  int64_t size() const override { return static_cast<int64_t>(entries_.size()); }
  std::vector<data::LabelSpec> labels() const override { return base_.labels(); }
  std::vector<int64_t> classes(int64_t i, const std::string& name) const override;
  std::vector<int64_t> instance_shape() const override { return base_.instance_shape(); }
  int64_t num_instances(int64_t i) const override;
  void read_instances(int64_t i, const int64_t* idx, int64_t n, float* dst) const override;
  bool instance_is_zero(int64_t i, int64_t p) const override;
  void prefetch(int64_t i) const override;
  void set_epoch(int64_t epoch) override { base_.set_epoch(epoch); }
  bool has_pixels() const override { return true; }
  int64_t channels() const override { return base_.channels(); }
  PatchGrid grid(int64_t i) const override;
  void read_image(int64_t i, float* dst) const override;
  bool has_lowres() const override { return base_.has_lowres(); }
  std::pair<int64_t, int64_t> lowres_size(int64_t i) const override;
  void read_lowres(int64_t i, float* dst) const override;

 private:
  struct Entry {
    int64_t origin = 0;  // the base image
    int store = -1;      // -1: the base image itself
    int64_t row = 0;
  };
  const Entry& entry(int64_t i) const;
  data::DataSource& base_;
  int64_t n_base_;
  std::string mode_;
  std::vector<std::shared_ptr<const ProxyStore>> stores_;
  std::vector<Entry> entries_;
  int64_t n_proxies_ = 0;
};

/// The pixel rule: image (C, H, W) changed in place where map (H, W) > tau.
/// Returns the fraction of pixels changed.
double apply_proxy_rule(float* image, int64_t C, int64_t H, int64_t W, const float* map,
                        const ProxyAttentionConfig& p);

/// What one proxy step did (a row of metrics.jsonl).
struct ProxyStepResult {
  int64_t step = 0;          // 1, 2, ...
  int64_t epoch = 0;         // completed epochs when it ran
  int64_t candidates = 0;    // misclassified images (select: misclassified) or all (highest_loss)
  int64_t changed = 0;       // proxies made
  double mean_loss = 0;      // mean loss of the chosen images
  double changed_pixels = 0; // mean fraction of pixels changed per proxy
  double seconds = 0;
  std::string dir;           // RUN/proxy/cycle_<step>
};

/// Runs proxy step `step` with the current model: scores the first n_base
/// images of `train` (the training set as it is now) in eval mode, chooses
/// them by the config's rule, explains the chosen ones, applies the pixel
/// rule and writes RUN/proxy/cycle_<step>/ atomically (a partial one from an
/// interrupted run is replaced). kind: the explanation kind to use.
ProxyStepResult run_proxy_step(Method& method, const data::DataSource& train, int64_t n_base, const Config& cfg,
                               const std::string& kind, Device device, int64_t step, int64_t epoch,
                               const std::string& run_dir, uint64_t seed, bool quiet);

/// RUN/proxy/cycle_<step>.
std::string proxy_cycle_dir(const std::string& run_dir, int64_t step);

}  // namespace train
}  // namespace ipsnet

// The training configuration: the PyTorch reference's YAML keys (SPEC section
// 3), the dissertation's, and ipsnet's own. Unknown keys are errors that
// suggest the nearest known key; types and ranges are checked; `--set
// key=value` overrides a loaded file.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ipsnet {
namespace train {

struct TaskConfig {
  std::string name;                // majority | max | top | multi | any label the dataset has
  int64_t id = 0;                  // token index
  std::string act_fn = "softmax";  // softmax | sigmoid
  std::string metric = "accuracy";  // accuracy | multilabel_accuracy | auc
  int64_t n_class = 10;
};

/// Proxy Attention (docs/proxy_attention.md, SPEC section 7): training
/// cycles that mask, on the training images the model gets wrong, what its
/// explanation map points at, and train on the changed images too.
struct ProxyAttentionConfig {
  bool enabled = false;            // the section was given
  std::vector<int64_t> schedule;   // epochs, and kProxyStep for a proxy step: [20, "p", 19]
  static constexpr int64_t kProxyStep = -1;
  std::string explain = "auto";    // auto (the method's default) | gradcam_pp | gradcam | cam | attention
  std::string task;                // the task whose predictions are explained ("": the first)
  std::string select = "misclassified";  // misclassified | highest_loss
  int64_t count = 0;               // how many of them (0: use fraction)
  double fraction = 0.2;           // or this fraction of them (the later code's change_subset_attention)
  double threshold = 0.85;         // tau: pixels whose map exceeds it change
  std::string replace = "blended"; // blended: (1 - weight * M) * x | zero | mean | max | min (a constant)
  double weight = 0.1;             // lambda of blended
  std::string mode = "augment";    // augment: proxies added to the training set | replace: they take their originals' place
  bool clear_every_step = false;   // earlier steps' proxies dropped at each step
  int64_t sheet_images = 8;        // rows of the PNG sheet of each step

  /// The epochs after which proxy steps run (cumulative; one entry per step).
  std::vector<int64_t> step_epochs() const;
  /// Epochs the schedule trains.
  int64_t epochs() const;
};

struct Config {
  // ---- reference keys ----
  std::string dataset = "mnist";
  std::string data_dir;          // the dataset directory (alias: data)
  int64_t n_class = 10;
  bool eager = false;
  int64_t B = 16;
  int64_t B_seq = 16;
  int64_t n_epoch = 150;
  int64_t n_epoch_warmup = 10;
  double lr = 1e-3;
  double wd = 0.1;
  int64_t n_worker = 1;          // accepted; ipsnet prefetches on one background thread
  bool pin_memory = true;        // accepted; CUDA transfers use pinned buffers
  bool use_pos = true;
  bool shuffle = true;
  std::string shuffle_style = "batch";  // batch | instance
  bool is_image = true;
  int64_t n_chan_in = 1;
  int64_t patch_size = 50;       // square patches; [h, w] lists must be equal
  int64_t patch_stride = 50;
  std::string enc_type = "resnet18";  // resnet18 | resnet34 | resnet50
  bool pretrained = false;
  int64_t n_res_blocks = 2;
  int64_t N = 0;                 // 0: computed from the image and patch sizes
  int64_t M = 100;
  int64_t I = 100;
  int64_t D = 128;
  int64_t H = 8;
  int64_t D_k = 16;
  int64_t D_v = 16;
  int64_t D_inner = 512;
  double attn_dropout = 0.1;
  double dropout = 0.1;
  int64_t n_token = 4;
  std::vector<TaskConfig> tasks;
  bool track_efficiency = false;
  int64_t track_epoch = 0;
  bool semantic_diversity_loss = false;
  double mask_p = 0.0;
  int64_t mask_K = 0;
  bool attention_map = false;
  // ---- ipsnet keys ----
  std::string out_dir = "runs";
  std::string run_name;          // default: <dataset>-<timestamp>
  std::string device = "auto";
  int64_t threads = 0;           // 0: OMP_NUM_THREADS or all cores
  int64_t seed = 0;
  double grad_clip = 0.0;        // max global gradient norm; 0 = off (alias: clipnorm, the original ATS's name)
  std::string optimizer = "adamw";      // adamw | adam (L2 in the gradient) | sgd (engine/optim/optim.h)
  double momentum = 0.9;                // sgd: heavy-ball momentum in [0, 1)
  std::string lr_schedule = "cosine";   // cosine (warm-up + cosine) | constant | step (train/trainer.h Schedule)
  std::vector<int64_t> decrease_lr_at;  // step: lr / 10 after each of these epochs (increasing, >= 1)
  double w_div = 3.0;            // diversity loss weight (semantic_diversity_loss)
  double w_sem = 1.0;            // semantic loss weight
  bool mask_eval = false;        // STKIM at evaluation too (the dissertation's behaviour)
  bool wd_exclude_norm_bias = false;
  int64_t max_train = 0;         // use only the first n training images (0 = all)
  int64_t max_test = 0;
  std::string pretrained_path;   // safetensors with torchvision ResNet names
  std::string freeze = "none";   // none | all | all_but_last (frozen backbone strategies)
  std::string normalize = "none";  // none | imagenet: photos as (x - mean) / std per channel (docs/data.md)
  double augment_jitter = 0.0;     // photos, training only: colour jitter of brightness, contrast, saturation, hue
  int64_t augment_translate = 0;   // photos, training only: random translation of up to this many pixels
  int64_t eval_every = 1;        // epochs
  int64_t log_every = 0;         // steps between log lines (0: progress bar only)
  bool prefetch = true;          // prepare the next batch in the background
  bool sync_batchnorm = false;   // data-parallel: BatchNorm statistics over all ranks (docs/distributed.md)
  bool dedup_patches = true;     // encode identical (e.g. empty) patches once per batch in selection
  bool fold_bn = false;          // selection runs the encoder with BatchNorm folded into the convs
  bool selection_bf16 = false;   // selection convs in bfloat16 (CPU with AVX512-BF16; not exact)
  double bf16_margin = 0.005;    // bf16 selection: rescore candidates this close to the top-M boundary in fp32
  std::string precision = "fp32";  // fp32 | bf16: convs and matmuls of selection and training in bfloat16
  bool recompute_activations = true;  // training pass: ResNet BN+ReLU outputs and the stem recomputed in backward
  std::string eval_split = "test";
  std::string method = "ips";    // ips | first_m | random_m | cnn | ats (train/methods.cpp)
  // ---- method: cnn (train/methods/cnn.cpp) and method: ats (train/methods/ats.cpp) ----
  double cnn_scale = 1.0;        // cnn: the whole image downscaled by this factor (area) before the ResNet
  int64_t memory_limit_mib = 0;  // cnn: memory a step may take (0: what the device has); checked before allocating
  double scale = 0.0;            // ats: low-resolution view = image downscaled by this (0: the dataset's stored view)
  int64_t n_patches = 10;        // ats: patches sampled per image
  double regularizer_strength = 1e-4;  // ats: multinomial entropy regulariser on the attention
  bool ats_replace = false;      // ats: sample with replacement (default: without, Gumbel top-k)
  std::string ats_eval = "sample";     // ats: at evaluation sample | topk
  std::string ats_features = "ats";    // ats: feature net per patch: ats (the original's CNN) | resnet (enc_type, n_res_blocks)
  // ---- proxy_attention: a section of its own keys (train/proxy_attention.h) ----
  ProxyAttentionConfig proxy;

  /// Which keys a file or --set gave explicitly.
  std::map<std::string, std::string> given;
};

/// Reads a YAML file (reference or ipsnet keys). Throws one clear line.
Config load_config(const std::string& path);
/// Parses YAML text (for tests and --set).
Config parse_config(const std::string& yaml_text, const std::string& source);
/// Applies "key=value" (value is YAML: 3, 1e-3, true, [50, 50], resnet18).
void apply_override(Config& cfg, const std::string& assignment);
/// Range and consistency checks that do not need the data (N is checked later).
void validate(const Config& cfg);
/// Bytes a training run of this configuration needs at least (parameters with
/// AdamW state, a step's buffer and transformer activations); validate()
/// refuses configurations above the machine's physical memory.
double estimate_memory_bytes(const Config& cfg);
/// YAML text of every key (the effective configuration, as saved in the run dir).
std::string to_yaml(const Config& cfg);
/// The schedule as written: [20, "p", 19].
std::string proxy_schedule_text(const std::vector<int64_t>& schedule);
/// A two-column table for the console.
std::string to_table(const Config& cfg);
/// The default IPS Megapixel MNIST tasks (majority, max, top: softmax/accuracy;
/// multi: sigmoid/multilabel_accuracy).
std::vector<TaskConfig> default_mnist_tasks();
/// All known top-level keys.
std::vector<std::string> known_keys();

}  // namespace train
}  // namespace ipsnet

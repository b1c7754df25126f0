// A data source: one split of one kind of stored data, as the methods see it
// (docs/architecture.md). It knows its images, their labels per task, the
// instances a method selects among (the patches of a grid, or the rows of a
// feature bag) and how to hand out the instances of given indices (lazy) or
// a whole image (eager); it knows nothing of methods or models.
//
// Kinds are registered in data/sources.cpp (one line each) and chosen by
// what a dataset directory holds.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/math/patches.h"

namespace ipsnet {
namespace data {

/// A label a source stores for each image.
struct LabelSpec {
  std::string name;
  int64_t n_class = 0;
  bool multi_label = false;  // several classes per image (a multi-hot target)
};

/// How a source cuts its images into instances.
struct SourceOptions {
  int64_t patch_size = 0;    // square patches of this side (image sources)
  int64_t patch_stride = 0;  // grid stride (0: patch_size)
  std::string normalize = "none";  // none | imagenet: (x - mean) / std per channel (photos)
  // Training augmentation (photos), drawn per (augment_seed, epoch, image):
  double jitter = 0.0;        // colour jitter strength for brightness, contrast, saturation, hue (0: off)
  int64_t translate = 0;      // random translation of up to this many pixels in each direction (0: off)
  uint64_t augment_seed = 0;
};

/// One split of stored data. Every reader is safe to call from several
/// threads at once (the trainer prepares the next batch in the background).
class DataSource {
 public:
  virtual ~DataSource() = default;
  /// The kind's registered name ("canvas", ...).
  virtual std::string kind() const = 0;
  /// One line for logs: what, how many, how large.
  virtual std::string describe() const = 0;
  /// Images in the split.
  virtual int64_t size() const = 0;

  // ---- labels --------------------------------------------------------------
  /// The labels the source stores (only those known for every image).
  virtual std::vector<LabelSpec> labels() const = 0;
  /// The classes of image i in label `name`: one for a single-label task, any
  /// number (a multi-hot target's set bits) for a multi-label one.
  virtual std::vector<int64_t> classes(int64_t i, const std::string& name) const = 0;

  // ---- instances: the units a method selects among ------------------------
  /// The shape of one instance: (C, ph, pw) for image patches, (F) for features.
  virtual std::vector<int64_t> instance_shape() const = 0;
  /// Instances of image i (its patch grid's count, or its bag's length).
  virtual int64_t num_instances(int64_t i) const = 0;
  /// dst (n, *instance_shape): instances idx[0..n) of image i (lazy loading:
  /// reads only what those instances need).
  virtual void read_instances(int64_t i, const int64_t* idx, int64_t n, float* dst) const = 0;
  /// True when instance p of image i is known to hold only zeros without
  /// reading its pixels (the exact empty-patch shortcut); false when unknown.
  virtual bool instance_is_zero(int64_t i, int64_t p) const { return false; }
  /// Pages image i in ahead of use and verifies it (prefetch thread); optional.
  virtual void prefetch(int64_t i) const {}
  /// The epoch whose augmentation the next reads use (sources that augment).
  virtual void set_epoch(int64_t epoch) {}

  // ---- whole images (sources with pixels) ----------------------------------
  /// False for sources without pixels (feature bags).
  virtual bool has_pixels() const { return false; }
  /// Channels C of every image (pixel sources).
  virtual int64_t channels() const { return 0; }
  /// The patch grid of image i (pixel sources; its height and width are the image's).
  virtual PatchGrid grid(int64_t i) const;
  /// dst (C, H, W): the whole image i (eager loading, full-image methods).
  virtual void read_image(int64_t i, float* dst) const;
  /// A stored low-resolution view (attention sampling); (h, w) of image i's.
  virtual bool has_lowres() const { return false; }
  virtual std::pair<int64_t, int64_t> lowres_size(int64_t i) const;
  /// dst (C, h, w).
  virtual void read_lowres(int64_t i, float* dst) const;
};

/// A registered kind: how to recognise its directories and open a split.
struct SourceKind {
  const char* name;
  const char* what;  // one line for --help and errors
  bool (*detect)(const std::string& dir);
  std::unique_ptr<DataSource> (*open)(const std::string& dir, const std::string& split, const SourceOptions& options);
};

/// Every registered kind (data/sources.cpp).
const std::vector<SourceKind>& source_kinds();

/// Opens split `split` of the dataset directory `dir` with the first kind
/// that recognises it. Throws one line naming the directory and the kinds
/// when none does.
std::unique_ptr<DataSource> open_source(const std::string& dir, const std::string& split,
                                        const SourceOptions& options);

}  // namespace data
}  // namespace ipsnet

// Issue 12: the interfaces between data, methods and the trainer: data
// sources (the canvas kind and the registry), batches and their loading
// modes, the method registry with the first_m / random_m baselines (a second
// method that touches only its own file plus one registration line), the
// selection's mode guard, the schedule, and the atomic file writer.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>

#include "data/canvas_source.h"
#include "data/source.h"
#include "engine/common/files.h"
#include "layers/mode_guard.h"
#include "tests/train/tiny_data.h"
#include "train/batch.h"
#include "train/method.h"

namespace ipsnet {
namespace {

using testing_data::TempDir;
using testing_train::ips_net;
using testing_train::tiny;
using testing_train::tiny_config;

std::unique_ptr<data::DataSource> tiny_source(const std::string& split = "train") {
  data::SourceOptions o;
  o.patch_size = 28;
  o.patch_stride = 28;
  return data::open_source(tiny().dir, split, o);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(DataSource, CanvasKindHandsOutPatchesLabelsAndEmptiness) {
  auto src = tiny_source();
  EXPECT_EQ(src->kind(), "canvas");
  EXPECT_EQ(src->size(), 32);
  EXPECT_TRUE(src->has_pixels());
  EXPECT_EQ(src->channels(), 1);
  EXPECT_EQ(src->num_instances(0), 36);  // 168 / 28 = 6 x 6
  EXPECT_EQ(src->instance_shape(), (std::vector<int64_t>{1, 28, 28}));
  std::vector<std::string> names;
  for (const data::LabelSpec& l : src->labels()) names.push_back(l.name);
  EXPECT_EQ(names, (std::vector<std::string>{"majority", "max", "top", "multi"}));
  const auto& reader = dynamic_cast<const data::CanvasSource&>(*src).reader();
  for (int64_t i : {0, 5}) {
    EXPECT_EQ(src->classes(i, "majority"), std::vector<int64_t>{reader.meta(i).majority});
    std::vector<int64_t> multi = src->classes(i, "multi");
    for (int c = 0; c < 10; ++c)
      EXPECT_EQ(std::count(multi.begin(), multi.end(), c) == 1, reader.meta(i).multi[static_cast<size_t>(c)] != 0);
    // Lazy reads equal the stored pixels; emptiness is known without them.
    const PatchGrid g = src->grid(i);
    std::vector<float> image(static_cast<size_t>(g.height * g.width));
    src->read_image(i, image.data());
    std::vector<int64_t> idx = {0, 7, 35, 7};
    std::vector<float> patches(idx.size() * 28 * 28);
    src->read_instances(i, idx.data(), static_cast<int64_t>(idx.size()), patches.data());
    for (size_t k = 0; k < idx.size(); ++k) {
      bool zero = true;
      for (int64_t y = 0; y < 28; ++y)
        for (int64_t x = 0; x < 28; ++x) {
          float want = image[static_cast<size_t>(g.source_offset(idx[k], 0, y, x))];
          EXPECT_EQ(patches[k * 784 + static_cast<size_t>(y * 28 + x)], want);
          zero = zero && want == 0.0f;
        }
      EXPECT_EQ(src->instance_is_zero(i, idx[k]), zero) << "patch " << idx[k];
    }
  }
  EXPECT_NE(error_of([&] { src->classes(0, "colour"); }).find("not 'colour'"), std::string::npos);
}

TEST(DataSource, UnknownDirectoriesAreOneClearLine) {
  TempDir empty;
  std::string msg = error_of([&] { data::open_source(empty.path, "train", {}); });
  EXPECT_NE(msg.find("holds no dataset ipsnet recognises"), std::string::npos) << msg;
  EXPECT_NE(msg.find("canvas"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  msg = error_of([&] { data::open_source(empty / "missing", "train", {}); });
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
}

TEST(Batch, EagerPartsCutOnTheDeviceAsLazyReadsThem) {
  auto src = tiny_source();
  std::vector<int64_t> ids = {3, 1, 4, 2};
  train::Batch lazy(*src, ids, Device::cpu(), false, 2);
  train::Batch eager(*src, ids, Device::cpu(), true, 2);
  EXPECT_EQ(lazy.parts(), 1);
  EXPECT_EQ(eager.parts(), 2);
  std::vector<int64_t> img = {0, 0, 1, 1, 0}, pat = {5, 30, 0, 35, 6};
  // Eager part 1 holds images 4 and 2: compare with lazy images 2 and 3.
  std::vector<int64_t> lazy_img = {2, 2, 3, 3, 2};
  Tensor a = lazy.part(0).get(lazy_img, pat), b = eager.part(1).get(img, pat);
  EXPECT_EQ(a.shape(), (Shape{5, 1, 28, 28}));
  EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
  for (size_t k = 0; k < img.size(); ++k)
    EXPECT_EQ(lazy.part(0).is_zero(lazy_img[k], pat[k]), eager.part(1).is_zero(img[k], pat[k]));
  // get_rows: (B, k) indices, image-major.
  Tensor rows = eager.part(1).get_rows(Tensor::from_vector<int64_t>({5, 30, 0, 35}, {2, 2}));
  EXPECT_EQ(rows.to_vector<float>(), b.slice(0, 0, 4).to_vector<float>());
  eager.release(1);
  EXPECT_TRUE(eager.eager[1] == nullptr);
  EXPECT_NE(error_of([&] { eager.part(2); }).find("batch part 2 of 2"), std::string::npos);
}

TEST(Methods, RegistryNamesEveryMethodAndRefusesUnknownOnes) {
  std::vector<std::string> names;
  for (const train::MethodKind& k : train::method_kinds()) names.push_back(k.name);
  for (const char* m : {"ips", "first_m", "random_m"})
    EXPECT_NE(std::find(names.begin(), names.end(), m), names.end()) << m;
  TempDir out;
  train::Config c = tiny_config(out.path);
  c.method = "magic";
  std::string msg = error_of([&] { train::Trainer t(c, true); });
  EXPECT_NE(msg.find("unknown method 'magic'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("first_m"), std::string::npos) << msg;
}

TEST(Methods, FirstMTrainsOnTheFirstPatchesAndReloadsFromItsCheckpoint) {
  TempDir out;
  train::Config c = tiny_config(out.path);
  c.method = "first_m";
  c.n_epoch = 1;
  train::Trainer t(c, true);
  EXPECT_EQ(t.method().name(), "first_m");
  train::Attention a = t.attend("test", {0, 2}, false);
  EXPECT_EQ(a.idx.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2, 3, 0, 1, 2, 3}));
  EXPECT_FALSE(a.scores.defined());
  ASSERT_TRUE(t.fit());
  const train::EvalResult& test = t.history().back().second;
  EXPECT_EQ(test.images, 16);
  EXPECT_TRUE(std::isfinite(test.loss));
  // The checkpoint carries the method: eval builds first_m again.
  auto e = train::Trainer::from_checkpoint(t.run_dir() + "/checkpoint_last.safetensors", {}, true);
  EXPECT_EQ(e->method().name(), "first_m");
  EXPECT_NEAR(e->evaluate("test").loss, test.loss, 1e-6);
}

TEST(Methods, RandomMIsSeededPerStep) {
  TempDir o1, o2;
  train::Config c = tiny_config(o1.path);
  c.method = "random_m";
  train::Trainer a(c, true);
  c.out_dir = o2.path;
  train::Trainer b(c, true);
  std::vector<int64_t> ids = a.epoch_order(0);
  ids.resize(8);
  EXPECT_EQ(a.train_step(ids), b.train_step(ids));  // same seed, same draws, same loss
  train::Attention r = a.attend("train", {0}, false);
  std::vector<int64_t> idx = r.idx.to_vector<int64_t>();
  std::sort(idx.begin(), idx.end());
  EXPECT_EQ(std::unique(idx.begin(), idx.end()), idx.end());  // M distinct patches
  EXPECT_EQ(idx.size(), 4u);
}

// A source whose reads fail part-way, as a corrupt record would.
class FailingSource : public PatchSource {
 public:
  int64_t batch() const override { return 1; }
  int64_t num_patches() const override { return 12; }
  Tensor get(const std::vector<int64_t>& image, const std::vector<int64_t>&) override {
    if (++calls_ > 1) IPSNET_FAIL("corrupt record");
    return Tensor::zeros({static_cast<int64_t>(image.size()), 1, 28, 28});
  }
  int calls_ = 0;
};

TEST(Selection, AFailingReadLeavesTheNetworkAsItWas) {
  TempDir out;
  train::Trainer t(tiny_config(out.path), true);
  IPSNet& net = ips_net(t);
  net.train();
  IPSOptions o;
  o.M = 4;
  o.I = 4;
  o.fold_bn = true;
  o.dedup_zero = false;
  o.dedup_identical = false;
  FailingSource src;
  Generator g(1);
  EXPECT_THROW(ips_select(net, src, o, g), Error);
  EXPECT_TRUE(net.is_training());
  EXPECT_FALSE(dynamic_cast<ResNet&>(*net.encoder_).fold_bn());
  EXPECT_TRUE(grad_enabled());
  {
    TrainModeGuard g2(net, false);
    EXPECT_FALSE(net.is_training());
  }
  EXPECT_TRUE(net.is_training());
}

TEST(Schedule, OnePlaceForTheLearningRate) {
  TempDir out;
  train::Config c = tiny_config(out.path);
  c.n_epoch = 4;
  c.n_epoch_warmup = 1;
  train::Trainer t(c, true);
  const train::Schedule& s = t.schedule();
  EXPECT_EQ(s.warmup_steps, 4);  // 32 images / B 8
  EXPECT_EQ(s.total_steps, 16);
  EXPECT_NEAR(s.at(0), 0.0, 1e-15);
  EXPECT_NEAR(s.at(2), 0.5 * c.lr, 1e-15);
  EXPECT_NEAR(s.at(4), c.lr, 1e-15);
  EXPECT_NEAR(s.at(15), 1e-3 * c.lr, 1e-15);
}

TEST(Files, AtomicFileAppearsWholeOrNotAtAll) {
  TempDir d;
  const std::string path = d / "out.txt";
  {
    AtomicFile f(path);
    f << "half";
    EXPECT_FALSE(std::filesystem::exists(path));
  }  // not committed: nothing left, no temporary either
  EXPECT_TRUE(std::filesystem::is_empty(d.path));
  write_file_atomic(path, "whole\n");
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "whole");
  std::string msg = error_of([&] { write_file_atomic(d / "no/such/dir.txt", "x"); });
  EXPECT_NE(msg.find("no/such/dir.txt"), std::string::npos) << msg;
  TempDirectory td(d / "set", false);
  write_file_atomic(td.path() + "/a", "1");
  td.commit();
  EXPECT_TRUE(std::filesystem::exists(d / "set/a"));
  msg = error_of([&] { TempDirectory again(d / "set", false); });
  EXPECT_NE(msg.find("already exists"), std::string::npos) << msg;
}

}  // namespace
}  // namespace ipsnet

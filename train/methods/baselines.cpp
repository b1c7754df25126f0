// Two baselines that replace IPS's selection and keep its network and pass:
//   first_m   the first M patches of the grid (row-major), the same for every image
//   random_m  M patches drawn at random per image and step (seeded)
// Useful to measure what the selection is worth; also the smallest example
// of a method (its own file plus one line in train/methods.cpp).
#include "train/methods/ips.h"

namespace ipsnet {
namespace train {
namespace {

class FixedChoice : public IPSMethod {
 public:
  FixedChoice(const MethodContext& ctx, bool random) : IPSMethod(ctx), random_(random) {}
  std::string name() const override { return random_ ? "random_m" : "first_m"; }

  void select(Batch& batch, bool, Generator& gen) override {
    std::vector<Tensor> patches, idx;
    for (int64_t k = 0; k < batch.parts(); ++k) {
      PatchSource& src = batch.part(k);
      Tensor chosen = choose(src.batch(), src.num_patches(), gen);
      patches.push_back(src.get_rows(chosen));
      idx.push_back(chosen);
      batch.release(k);
    }
    batch.selected_patches = patches.size() == 1 ? patches[0] : ops::cat(patches, 0);
    batch.selected_idx = idx.size() == 1 ? idx[0] : ops::cat(idx, 0);
  }

  // Their choice is not an explanation: no maps (not IPS's "attention").
  std::vector<std::string> explanations() const override { return {}; }

  Attention attend(Batch& batch, bool, Generator& gen) override {
    PatchSource& src = batch.part(0);
    Attention a;
    a.idx = choose(src.batch(), src.num_patches(), gen);
    return a;
  }

 private:
  // (B, min(M, N)) int64 patch indices.
  Tensor choose(int64_t B, int64_t N, Generator& gen) const {
    const int64_t M = std::min(cfg_.M, N);
    std::vector<int64_t> out;
    for (int64_t b = 0; b < B; ++b) {
      std::vector<int64_t> row = random_ ? gen.permutation(N) : std::vector<int64_t>();
      for (int64_t j = 0; j < M; ++j) out.push_back(random_ ? row[static_cast<size_t>(j)] : j);
    }
    return Tensor::from_vector(out, {B, M});
  }
  bool random_;
};

}  // namespace

std::unique_ptr<Method> make_first_m_method(const MethodContext& ctx) {
  return std::make_unique<FixedChoice>(ctx, false);
}
std::unique_ptr<Method> make_random_m_method(const MethodContext& ctx) {
  return std::make_unique<FixedChoice>(ctx, true);
}

}  // namespace train
}  // namespace ipsnet

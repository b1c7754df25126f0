#include "train/data_parallel.h"

#include <cstring>

#include "engine/autograd/node.h"
#include "engine/common/error.h"
#include "engine/ops/ops.h"

namespace ipsnet {
namespace train {

namespace {
uint64_t fnv1a(const void* data, size_t n, uint64_t h = 1469598103934665603ull) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

std::string hex(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof(b), "%016llx", static_cast<unsigned long long>(v));
  return b;
}
}  // namespace

uint64_t tensor_checksum(const std::vector<Tensor>& ts) {
  uint64_t h = 1469598103934665603ull;
  for (const Tensor& t : ts) {
    Tensor c = t.to(Device::cpu()).contiguous();
    h = fnv1a(c.raw_data(), c.nbytes(), h);
  }
  return h;
}

namespace {
struct SumOverRanksBackward : Node {
  dist::Comm* comm = nullptr;
  const double* scale = nullptr;  // this rank's share, read when backward runs
  const char* name() const override { return "SumOverRanksBackward"; }
  std::vector<Tensor> apply(const Tensor& g) override {
    const double s = *scale;
    Tensor t = ops::mul(g, s).contiguous();
    comm->allreduce_sum(t);
    if (s != 0) ops::mul_(t, 1.0 / s);
    return {t};
  }
};
}  // namespace

Tensor DataParallel::sum_over_ranks(const Tensor& x) {
  Tensor out = x.detach().contiguous().clone();
  if (active()) comm_.allreduce_sum(out);
  if (any_requires_grad({&x})) {
    auto node = std::make_shared<SumOverRanksBackward>();
    node->comm = &comm_;
    node->scale = &backward_scale_;
    set_history(out, node, {x});
  }
  return out;
}

DataParallel::DataParallel() : comm_(dist::world()), rank_(comm_.rank()), size_(comm_.size()) {}

void DataParallel::check_start(int64_t B, const std::string& config_yaml) const {
  if (!active()) return;
  IPSNET_CHECK(B % size_ == 0, "config key 'B': ", B, " is not divisible by the ", size_,
               " ranks of this run (each rank trains on B / K images of every global batch)");
  const std::string mine = hex(fnv1a(config_yaml.data(), config_yaml.size()));
  std::vector<std::string> all = comm_.allgather(mine);
  std::string differ;
  for (int r = 1; r < size_; ++r)
    if (all[static_cast<size_t>(r)] != all[0]) differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  IPSNET_CHECK(differ.empty(), "the config of rank(s) ", differ, " differs from rank 0's (config hash ", all[0],
               "): start every rank with the same --config and --set");
}

std::string DataParallel::broadcast_string(const std::string& s) const {
  if (!active()) return s;
  return comm_.allgather(rank_ == 0 ? s : std::string())[0];
}

void DataParallel::broadcast_module(Module& m) const {
  if (!active()) return;
  for (const auto& [name, t] : m.state_dict()) {
    Tensor host = t.to(Device::cpu()).contiguous();
    comm_.broadcast(host.raw_data(), static_cast<int64_t>(host.nbytes()), 0);
    Tensor dst = t;
    dst.copy_(host.to(t.device()));
  }
}

void DataParallel::check_in_sync(Module& m, int64_t step) const {
  if (!active()) return;
  // Parameters only: BatchNorm running statistics legitimately differ between
  // ranks when each normalises over its own shard (sync_batchnorm: false).
  std::vector<std::string> all = comm_.allgather(hex(tensor_checksum(m.parameters())));
  std::string differ;
  for (int r = 1; r < size_; ++r)
    if (all[static_cast<size_t>(r)] != all[0]) differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  IPSNET_CHECK(differ.empty(), "after step ", step, " the parameters of rank(s) ", differ,
               " differ from rank 0's (checksum ", all[0], "): the ranks no longer train the same model");
}

std::vector<int64_t> DataParallel::shard(const std::vector<int64_t>& ids) const {
  if (!active()) return ids;
  const int64_t n = static_cast<int64_t>(ids.size());
  const int64_t a = rank_ * n / size_, b = (rank_ + 1) * n / size_;
  return std::vector<int64_t>(ids.begin() + a, ids.begin() + b);
}

void DataParallel::attach(std::vector<Tensor> params, int64_t bucket_bytes) {
  if (!active()) return;
  reducer_ = std::make_unique<dist::GradReducer>(comm_, std::move(params), bucket_bytes);
}

void DataParallel::begin_backward(int64_t local_images, int64_t global_images) {
  backward_scale_ = global_images > 0 ? static_cast<double>(local_images) / static_cast<double>(global_images) : 0.0;
  if (!reducer_) return;
  reducer_->begin(backward_scale_);
}

void DataParallel::end_backward() {
  if (reducer_) reducer_->finish();
}

double DataParallel::sum(double v) const { return active() ? comm_.sum(v) : v; }

Tensor DataParallel::gather_cat(const Tensor& local) const {
  if (!active()) return local;
  Tensor c = local.to(Device::cpu()).contiguous();
  std::vector<std::string> all =
      comm_.allgather(std::string(static_cast<const char*>(c.raw_data()), c.nbytes()));
  Shape shape = c.shape();
  IPSNET_CHECK(!shape.empty(), "gather_cat: expected a tensor with at least one dimension");
  const int64_t row_bytes = shape[0] > 0 ? static_cast<int64_t>(c.nbytes()) / shape[0]
                                         : static_cast<int64_t>(dtype_size(c.dtype()) * shape_numel(Shape(shape.begin() + 1, shape.end())));
  int64_t rows = 0;
  for (const std::string& s : all) rows += row_bytes > 0 ? static_cast<int64_t>(s.size()) / row_bytes : 0;
  shape[0] = rows;
  Tensor out = Tensor::empty(shape, c.dtype());
  char* p = static_cast<char*>(out.raw_data());
  for (const std::string& s : all) {
    std::memcpy(p, s.data(), s.size());
    p += s.size();
  }
  return out;
}

std::string DataParallel::gather_string(const std::string& local) const {
  if (!active()) return local;
  std::string out;
  for (const std::string& s : comm_.allgather(local)) out += s;
  return out;
}

}  // namespace train
}  // namespace ipsnet

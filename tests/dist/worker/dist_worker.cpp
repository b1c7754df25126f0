// One rank of the data-parallel tests (tests/dist/test_dist.cpp starts K of
// them, under mpirun or through the file rendezvous). Each scenario checks
// its own results and exits 0, or prints what differs and exits 1.
//   dist_worker collectives   sums, broadcast, allgather of unequal lengths
//   dist_worker reducer       bucketed, overlapped gradient sums == one process
//   dist_worker silent        rank 1 leaves at once; rank 0 waits in a
//                             collective and must stop at the timeout
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/dist/comm.h"
#include "engine/dist/reducer.h"
#include "engine/engine.h"
#include "layers/linear.h"

using namespace ipsnet;

namespace {

int failures = 0;
void expect(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "rank %d: FAILED: %s\n", dist::world().rank(), what.c_str());
    ++failures;
  }
}

void collectives() {
  dist::Comm& w = dist::world();
  const int r = w.rank(), k = w.size();
  // Sum of float32 and float64 tensors.
  Tensor a = Tensor::from_vector(std::vector<float>{1.0f * r, 2.0f, -0.5f * r}, {3});
  w.allreduce_sum(a);
  std::vector<float> av = a.to_vector<float>();
  const double tri = k * (k - 1) / 2.0;
  expect(av[0] == tri && av[1] == 2.0f * k && av[2] == -0.5 * tri, "allreduce float32");
  Tensor d = Tensor::from_vector(std::vector<double>{0.1 * (r + 1)}, {1});
  w.allreduce_sum(d);
  expect(std::fabs(d.to_vector<double>()[0] - 0.1 * k * (k + 1) / 2.0) < 1e-12, "allreduce float64");
  expect(w.sum(r + 1.0) == k * (k + 1) / 2.0, "sum");
  // A larger buffer, async, two at once.
  Tensor big = Tensor::full({100000}, 1.0, DType::Float32);
  Tensor big2 = Tensor::full({7}, 2.0, DType::Float32);
  auto w1 = w.allreduce_sum_async(big);
  auto w2 = w.allreduce_sum_async(big2);
  w2->wait();
  w1->wait();
  expect(big.to_vector<float>()[99999] == static_cast<float>(k) && big2.to_vector<float>()[6] == 2.0f * k,
         "two allreduces in flight");
  // Broadcast from the last rank.
  int64_t v = r == k - 1 ? 424242 : -1;
  w.broadcast(&v, sizeof(v), k - 1);
  expect(v == 424242, "broadcast");
  // Allgather of strings of different lengths (rank r: r + 1 letters).
  std::vector<std::string> all = w.allgather(std::string(static_cast<size_t>(r + 1), static_cast<char>('a' + r)));
  expect(static_cast<int>(all.size()) == k, "allgather count");
  for (int q = 0; q < k && q < static_cast<int>(all.size()); ++q)
    expect(all[static_cast<size_t>(q)] == std::string(static_cast<size_t>(q + 1), static_cast<char>('a' + q)),
           "allgather of rank " + std::to_string(q));
  w.barrier();
}

// A two-layer model, identical on every rank (same seed); a global batch of
// 6 samples; rank r trains on its contiguous share, with a third parameter
// that only rank 0 uses and a fourth that nobody uses.
struct Model {
  Generator gen{1234};
  Linear l1{LinearOptions(5, 7), gen}, l2{LinearOptions(7, 3), gen};
  Tensor only0 = Tensor::randn({3}, gen).set_requires_grad(true);
  Tensor unused = Tensor::randn({2}, gen).set_requires_grad(true);
  std::vector<Tensor> params() {
    std::vector<Tensor> p = l1.parameters();
    for (const Tensor& t : l2.parameters()) p.push_back(t);
    p.push_back(only0);
    p.push_back(unused);
    return p;
  }
  // Sum over the given samples of a per-sample loss, divided by `denom`.
  Tensor loss(const Tensor& x, const Tensor& y, int64_t denom, bool use_only0) {
    Tensor h = ops::tanh(l1.forward(x));
    Tensor o = l2.forward(h);
    if (use_only0) o = o + only0;
    return ops::sum(ops::square(o - y)) / static_cast<double>(denom);
  }
};

void reducer() {
  dist::Comm& w = dist::world();
  const int r = w.rank(), k = w.size();
  Generator dg(99);
  const int64_t n = 6;
  Tensor x = Tensor::randn({n, 5}, dg), y = Tensor::randn({n, 3}, dg);
  // One process: the mean loss of the whole batch (rank 0's samples use only0).
  Model ref;
  const int64_t n0 = (1 * n) / k;  // rank 0's share
  Tensor full = ref.loss(x, y, n, false) + ref.loss(x.narrow(0, 0, n0), y.narrow(0, 0, n0), n, true) -
                ref.loss(x.narrow(0, 0, n0), y.narrow(0, 0, n0), n, false);
  full.backward();
  // K ranks: each its share's mean loss; the reducer scales by share / n.
  Model m;
  const int64_t a = r * n / k, b = (r + 1) * n / k;
  dist::GradReducer red(w, m.params(), /*bucket_bytes=*/16);  // tiny buckets: several, started early
  expect(red.num_buckets() > 2, "several buckets");
  for (int step = 0; step < 2; ++step) {
    for (Tensor& p : m.params()) p.zero_grad();
    red.begin(static_cast<double>(b - a) / n);
    Tensor local = m.loss(x.narrow(0, a, b - a), y.narrow(0, a, b - a), b - a, r == 0);
    local.backward();
    red.finish();
    expect(red.started_early() > 0, "some buckets start during backward");
  }
  std::vector<Tensor> pr = ref.params(), pm = m.params();
  for (size_t i = 0; i < pr.size(); ++i) {
    if (i + 1 == pr.size()) {
      expect(!pm[i].grad().defined(), "a parameter no rank used keeps no gradient");
      continue;
    }
    expect(pm[i].grad().defined(), "parameter " + std::to_string(i) + " has a gradient");
    if (!pm[i].grad().defined()) continue;
    std::vector<float> g = pm[i].grad().to_vector<float>(), e = pr[i].grad().to_vector<float>();
    for (size_t j = 0; j < g.size(); ++j)
      expect(std::fabs(g[j] - e[j]) <= 1e-5 * (1 + std::fabs(e[j])),
             "parameter " + std::to_string(i) + "[" + std::to_string(j) + "]: " + std::to_string(g[j]) +
                 " against one process " + std::to_string(e[j]));
  }
}

void silent() {
  dist::Comm& w = dist::world();
  if (w.rank() == 1) std::_Exit(0);  // leaves without a word
  Tensor a = Tensor::full({4}, 1.0, DType::Float32);
  w.allreduce_sum(a);  // must end at the collective timeout, not hang
  std::fprintf(stderr, "rank 0: the collective returned although rank 1 left\n");
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    dist::init(&argc, &argv);
    const std::string what = argc > 1 ? argv[1] : "";
    if (what == "collectives") collectives();
    else if (what == "reducer") reducer();
    else if (what == "silent") silent();
    else {
      std::fprintf(stderr, "usage: dist_worker collectives|reducer|silent\n");
      return 2;
    }
    std::printf("rank %d/%d (%s): %s %s\n", dist::world().rank(), dist::world().size(),
                dist::world().kind().c_str(), what.c_str(), failures ? "FAILED" : "ok");
    std::fflush(stdout);
    dist::finalize();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dist_worker: %s\n", e.what());
    return 2;
  }
  return failures ? 1 : 0;
}

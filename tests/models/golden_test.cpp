// Golden tests against PyTorch (fixtures from tests/fixtures/make_golden.py).
// Every tensor must agree within 1e-4 relative (max |ipsnet - torch| over
// max |torch|, per tensor); the failure message lists each tensor's error.
#include <gtest/gtest.h>

#include "models/ips_net.h"
#include "tests/models/golden_util.h"

namespace ipsnet {
namespace {

using golden::Comparer;

constexpr double kTol = 1e-4;

void run_resnet_golden(int n_stages, const std::string& file, DType dtype) {
  TensorDict fx = safetensors::load_tensors(golden::fixture(file));
  Generator gen(0);
  ResNet net(ResNetOptions().depth(18).in_channels(1).n_res_blocks(n_stages), gen);
  golden::fill_hashed(net);
  net.to(dtype);
  Comparer c(kTol);
  Tensor x = fx.at("x").to(dtype);
  net.eval();
  {
    NoGradGuard ng;
    c.check("out_eval", net.forward(x), fx.at("out_eval"));
  }
  net.train();
  x.set_requires_grad(true);
  Tensor y = net.forward(x);
  c.check("out_train", y, fx.at("out_train"));
  ops::sum(y * fx.at("r").to(dtype)).backward();
  golden::check_grad(c, fx, "x", x.grad());
  for (const auto& it : net.named_parameters()) golden::check_grad(c, fx, it.first, it.second.grad());
  int n_buf = 0;
  for (const auto& it : net.named_buffers()) {
    const Tensor& want = fx.at("after." + it.first);
    if (it.second.dtype() == DType::Int64)
      EXPECT_EQ(it.second.item(), want.item()) << it.first;
    else
      c.check("after." + it.first, it.second, want);
    ++n_buf;
  }
  EXPECT_GT(n_buf, 0);
  auto r = c.result();
  EXPECT_TRUE(r) << file << " " << dtype_name(dtype);
  std::printf("[golden] %s %s: %s\n", file.c_str(), dtype_name(dtype), r.message());
}

TEST(Golden, ResNet18TwoStagesFloat32) { run_resnet_golden(2, "resnet18_2stage.safetensors", DType::Float32); }
TEST(Golden, ResNet18FourStagesFloat32) { run_resnet_golden(4, "resnet18_4stage.safetensors", DType::Float32); }
TEST(Golden, ResNet18TwoStagesFloat64) { run_resnet_golden(2, "resnet18_2stage.safetensors", DType::Float64); }

std::vector<TaskSpec> mnist_tasks() {
  return {{"majority", 10, TaskActivation::Softmax},
          {"max", 10, TaskActivation::Softmax},
          {"top", 10, TaskActivation::Softmax},
          {"multi", 10, TaskActivation::Sigmoid}};
}

IPSNetOptions agg_options(double dropout) {
  return IPSNetOptions()
      .encoder("features")
      .n_features(8)
      .transformer(AggregatorOptions().n_token(4).H(8).D(128).D_k(16).D_v(16).D_inner(512).attn_dropout(dropout).dropout(
          dropout))
      .tasks(mnist_tasks());
}

void run_aggregator_golden(DType dtype) {
  TensorDict fx = safetensors::load_tensors(golden::fixture("aggregator.safetensors"));
  Comparer c(kTol);
  Tensor pos = sinusoidal_positional_encoding(10, 128, dtype);
  c.check("pos", pos, fx.at("pos"));
  Tensor x0 = fx.at("emb").to(dtype) + pos.unsqueeze(0);  // (B, L, D)

  // eval mode with dropout 0.1 configured
  {
    Generator gen(0);
    IPSNet net(agg_options(0.1), gen);
    golden::fill_hashed(net);
    net.to(dtype);
    net.eval();
    NoGradGuard ng;
    c.check("eval.tokens", net.aggregate(x0), fx.at("eval.tokens"));
    c.check("eval.scores", net.get_scores(x0), fx.at("eval.scores"));
  }
  // train mode, dropout 0
  Generator gen(0);
  IPSNet net(agg_options(0.0), gen);
  golden::fill_hashed(net);
  net.to(dtype);
  net.train();
  Tensor x = x0.detach().clone();
  x.set_requires_grad(true);
  auto th = net.aggregate_with_heads(x);
  c.check("tokens", th.first, fx.at("tokens"));
  c.check("heads", th.second, fx.at("heads"));
  c.check("scores", net.get_scores(x), fx.at("scores"));
  auto logits = net.heads(th.first);
  std::map<std::string, Tensor> targets;
  for (const TaskSpec& t : net.tasks()) {
    c.check("logits." + t.name, logits.at(t.name), fx.at("logits." + t.name));
    targets[t.name] = fx.at("target." + t.name);
    c.check("loss." + t.name, net.task_loss(t, logits.at(t.name), targets[t.name]), fx.at("loss." + t.name));
  }
  Tensor loss = net.loss(logits, targets);
  c.check("loss", loss, fx.at("loss"));
  // the stable form agrees with the reference's log(p + 1e-6) / BCE-on-probabilities form
  EXPECT_NEAR(loss.item(), fx.at("loss_reference_form").item(), 1e-4);
  loss.backward();
  golden::check_grad(c, fx, "x", x.grad());
  int n = 0;
  for (const auto& it : net.named_parameters()) {
    if (it.first.rfind("encoder.", 0) == 0) continue;  // the feature encoder is not part of this fixture
    golden::check_grad(c, fx, it.first, it.second.grad());
    ++n;
  }
  EXPECT_EQ(n, 1 + 4 + 2 + 4 + 2 + 8);  // q, q_w/k_w/v_w/fc, LN, w_1/w_2 (w+b), LN, 4 heads (w+b)
  auto r = c.result();
  EXPECT_TRUE(r) << dtype_name(dtype);
  std::printf("[golden] aggregator %s: %s\n", dtype_name(dtype), r.message());
}

TEST(Golden, AggregatorFloat32) { run_aggregator_golden(DType::Float32); }
TEST(Golden, AggregatorFloat64) { run_aggregator_golden(DType::Float64); }

}  // namespace
}  // namespace ipsnet

// Module API: registration and names, train/eval, freeze, to(), state_dict and load errors.
#include <gtest/gtest.h>

#include "layers/layers.h"

namespace ipsnet {
namespace {

// A small two-level model: fc (Linear), block (Sequential(Linear, BatchNorm1d)), a parameter and a buffer.
struct Toy : Module {
  explicit Toy(Generator& gen) : Module("Toy") {
    scale_ = register_parameter("scale", Tensor::ones({2}));
    fc_ = register_module("fc", std::make_shared<Linear>(LinearOptions(3, 2), gen));
    block_ = register_module("block", std::make_shared<Sequential>());
    block_->push_back(std::make_shared<Linear>(LinearOptions(2, 2), gen));
    bn_ = block_->push_back(std::make_shared<BatchNorm1d>(BatchNormOptions(2)));
    register_buffer("step", Tensor::zeros({}, DType::Int64));
  }
  Tensor forward(const Tensor& x) override { return block_->forward(fc_->forward(x)) * scale_; }
  Tensor scale_;  // (2)
  std::shared_ptr<Linear> fc_;
  std::shared_ptr<Sequential> block_;
  std::shared_ptr<BatchNorm1d> bn_;
};

TEST(Module, DottedNamesInRegistrationOrder) {
  Generator gen(1);
  Toy m(gen);
  EXPECT_EQ(m.named_parameters().keys(), (std::vector<std::string>{"scale", "fc.weight", "fc.bias", "block.0.weight",
                                                                   "block.0.bias", "block.1.weight", "block.1.bias"}));
  EXPECT_EQ(m.named_buffers().keys(), (std::vector<std::string>{"step", "block.1.running_mean", "block.1.running_var",
                                                                "block.1.num_batches_tracked"}));
  // state_dict: per module own params, own buffers, then children (PyTorch order)
  EXPECT_EQ(m.state_dict().keys(),
            (std::vector<std::string>{"scale", "step", "fc.weight", "fc.bias", "block.0.weight", "block.0.bias",
                                      "block.1.weight", "block.1.bias", "block.1.running_mean", "block.1.running_var",
                                      "block.1.num_batches_tracked"}));
  EXPECT_EQ(m.parameters().size(), 7u);
  EXPECT_EQ(m.named_parameters(false).keys(), (std::vector<std::string>{"scale"}));
  EXPECT_EQ(m.num_parameters(), 2 + 6 + 2 + 4 + 2 + 2 + 2);
  EXPECT_TRUE(m.named_parameters().at("fc.weight").same(m.fc_->weight_));
}

TEST(Module, RegistrationErrors) {
  Generator gen(1);
  Toy m(gen);
  EXPECT_THROW(m.register_parameter("scale", Tensor::ones({1})), Error);
  EXPECT_THROW(m.register_buffer("fc", Tensor::ones({1})), Error);
  EXPECT_THROW(m.register_parameter("a.b", Tensor::ones({1})), Error);
  EXPECT_THROW(m.register_parameter("idx", Tensor::zeros({1}, DType::Int64)), Error);
  EXPECT_THROW(m.register_module("x", std::shared_ptr<Module>()), Error);
  EXPECT_THROW(m.child("nope"), Error);
  EXPECT_THROW(Module().forward(Tensor::ones({1})), Error);
}

TEST(Module, TrainEvalPropagates) {
  Generator gen(1);
  Toy m(gen);
  EXPECT_TRUE(m.is_training());
  m.eval();
  EXPECT_FALSE(m.is_training());
  EXPECT_FALSE(m.fc_->is_training());
  EXPECT_FALSE(m.bn_->is_training());
  m.block_->train();
  EXPECT_TRUE(m.bn_->is_training());
  EXPECT_FALSE(m.is_training());
  m.train();
  EXPECT_TRUE(m.fc_->is_training());
}

TEST(Module, FreezeUnfreezeAndZeroGrad) {
  Generator gen(1);
  Toy m(gen);
  m.fc_->freeze();
  EXPECT_FALSE(m.fc_->weight_.requires_grad());
  EXPECT_TRUE(m.block_->named_parameters().at("0.weight").requires_grad());
  Tensor x = Tensor::randn({4, 3}, gen);
  ops::sum(m.forward(x)).backward();
  EXPECT_FALSE(m.fc_->weight_.grad().defined());
  EXPECT_TRUE(m.scale_.grad().defined());
  m.zero_grad();
  EXPECT_FALSE(m.scale_.grad().defined());
  m.freeze();
  for (const auto& p : m.parameters()) EXPECT_FALSE(p.requires_grad());
  m.unfreeze();
  for (const auto& p : m.parameters()) EXPECT_TRUE(p.requires_grad());
}

TEST(Module, ToDTypeKeepsHandles) {
  Generator gen(1);
  Toy m(gen);
  Tensor handle = m.fc_->weight_;
  std::vector<float> before = handle.to_vector<float>();
  m.to(DType::Float64);
  EXPECT_EQ(handle.dtype(), DType::Float64);
  EXPECT_EQ(m.fc_->weight_.dtype(), DType::Float64);
  EXPECT_TRUE(handle.requires_grad());
  EXPECT_EQ(m.bn_->num_batches_tracked_.dtype(), DType::Int64);
  std::vector<double> after = handle.to_vector<double>();
  for (size_t i = 0; i < before.size(); ++i) EXPECT_EQ(static_cast<double>(before[i]), after[i]);
  Tensor y = m.forward(Tensor::zeros({2, 3}, DType::Float64));
  EXPECT_EQ(y.dtype(), DType::Float64);
  m.to(Device::cpu());  // same device: no-op
  EXPECT_THROW(m.to(DType::Int64), Error);
}

TEST(Module, StateDictRoundTrip) {
  Generator g1(1), g2(2);
  Toy a(g1), b(g2);
  EXPECT_NE(a.fc_->weight_.to_vector<float>(), b.fc_->weight_.to_vector<float>());
  Tensor handle = b.fc_->weight_;
  LoadResult r = b.load_state_dict(a.state_dict());
  EXPECT_TRUE(r.missing_keys.empty());
  EXPECT_TRUE(r.unexpected_keys.empty());
  EXPECT_EQ(handle.to_vector<float>(), a.fc_->weight_.to_vector<float>());
  EXPECT_TRUE(handle.same(b.fc_->weight_));
  // values are copied, not shared
  {
    NoGradGuard ng;
    a.fc_->weight_.fill_(3.0);
  }
  EXPECT_NE(b.fc_->weight_.to_vector<float>()[0], 3.0f);
}

TEST(Module, LoadErrorsListEveryProblemByName) {
  Generator g1(1);
  Toy m(g1);
  TensorDict sd = m.state_dict();
  TensorDict bad;
  for (const auto& it : sd) {
    if (it.first == "fc.bias" || it.first == "step") continue;  // missing
    if (it.first == "block.0.weight")
      bad.insert(it.first, Tensor::zeros({3, 2}));  // mis-shaped
    else
      bad.insert(it.first, it.second);
  }
  bad.insert("fc.extra", Tensor::zeros({1}));  // unexpected
  std::vector<float> w_before = m.block_->named_parameters().at("0.weight").to_vector<float>();
  try {
    m.load_state_dict(bad);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("missing keys (2)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("fc.bias"), std::string::npos) << msg;
    EXPECT_NE(msg.find("step"), std::string::npos) << msg;
    EXPECT_NE(msg.find("unexpected keys (1)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("fc.extra"), std::string::npos) << msg;
    EXPECT_NE(msg.find("block.0.weight: checkpoint (3, 2) vs model (2, 2)"), std::string::npos) << msg;
  }
  // nothing was modified
  EXPECT_EQ(m.block_->named_parameters().at("0.weight").to_vector<float>(), w_before);
  // non-strict: missing/unexpected reported, shape mismatch still throws
  EXPECT_THROW(m.load_state_dict(bad, false), Error);
  bad.insert("block.0.weight", sd.at("block.0.weight"));
  LoadResult r = m.load_state_dict(bad, false);
  EXPECT_EQ(r.missing_keys, (std::vector<std::string>{"step", "fc.bias"}));
  EXPECT_EQ(r.unexpected_keys, (std::vector<std::string>{"fc.extra"}));
}

TEST(Module, LoadConvertsDtypeAndAcceptsStdMap) {
  Generator g1(1);
  Toy m(g1);
  std::map<std::string, Tensor> sd;
  for (const auto& it : m.state_dict()) sd[it.first] = it.second.to(it.second.dtype() == DType::Int64 ? DType::Int64 : DType::Float64);
  sd["block.1.num_batches_tracked"] = Tensor::full({}, 7, DType::Int64);
  m.load_state_dict(sd);
  EXPECT_EQ(m.bn_->num_batches_tracked_.item(), 7);
  EXPECT_EQ(m.fc_->weight_.dtype(), DType::Float32);
}

TEST(TensorDict, InsertReplaceKeepsOrder) {
  TensorDict d;
  d.insert("b", Tensor::zeros({1}));
  d.insert("a", Tensor::zeros({2}));
  d.insert("b", Tensor::zeros({3}));
  EXPECT_EQ(d.keys(), (std::vector<std::string>{"b", "a"}));
  EXPECT_EQ(d.at("b").shape(), (Shape{3}));
  EXPECT_THROW(d.at("c"), Error);
}

}  // namespace
}  // namespace ipsnet

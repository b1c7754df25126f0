// Tensor semantics: views, broadcasting, copies, printing, errors.
#include <gtest/gtest.h>

#include "engine/engine.h"
#include "tests/testing/gradcheck.h"

namespace ipsnet {
namespace {

Tensor iota_f(const Shape& s) {
  std::vector<float> v(static_cast<size_t>(shape_numel(s)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);
  return Tensor::from_vector(v, s);
}

TEST(Tensor, FactoriesAndMetadata) {
  Tensor t = Tensor::zeros({2, 3, 4});
  EXPECT_EQ(t.dim(), 3);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.size(-1), 4);
  EXPECT_EQ(t.strides(), (Shape{12, 4, 1}));
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.dtype(), DType::Float32);
  EXPECT_TRUE(t.device().is_cpu());
  EXPECT_EQ(Tensor::ones({3}, DType::Int64).to_vector<int64_t>(), (std::vector<int64_t>{1, 1, 1}));
  EXPECT_EQ(Tensor::arange(4).to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_DOUBLE_EQ(Tensor::full({1}, 2.5, DType::Float64).item(), 2.5);
}

TEST(Tensor, ViewsShareStorage) {
  Tensor t = iota_f({2, 3, 4});
  Tensor p = t.permute({2, 0, 1});
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  EXPECT_FALSE(p.is_contiguous());
  EXPECT_EQ(p.storage(), t.storage());
  // element [k, i, j] == t[i, j, k]
  Tensor pc = p.contiguous();
  std::vector<float> v = pc.to_vector<float>();
  EXPECT_FLOAT_EQ(v[static_cast<size_t>(1 * 6 + 1 * 3 + 2)], 1 * 12 + 2 * 4 + 1);
  Tensor s = t.slice(2, 1, 4, 2);  // k = 1, 3
  EXPECT_EQ(s.shape(), (Shape{2, 3, 2}));
  EXPECT_EQ(s.to_vector<float>()[1], 3.0f);
  Tensor sel = t.select(1, 2);  // (2, 4)
  EXPECT_EQ(sel.shape(), (Shape{2, 4}));
  EXPECT_EQ(sel.to_vector<float>()[4], 20.0f);
  Tensor r = t.reshape({6, 4});
  EXPECT_EQ(r.storage(), t.storage());
  Tensor tr = t.transpose(0, 2).reshape({-1});  // not viewable: copies
  EXPECT_NE(tr.storage(), t.storage());
  EXPECT_EQ(tr.numel(), 24);
  Tensor e = Tensor::from_vector<float>({1, 2, 3}, {3, 1}).expand({3, 4});
  EXPECT_EQ(e.strides(), (Shape{1, 0}));
  EXPECT_EQ(e.contiguous().to_vector<float>()[5], 2.0f);
  EXPECT_EQ(t.unsqueeze(0).shape(), (Shape{1, 2, 3, 4}));
  EXPECT_EQ(t.unsqueeze(-1).shape(), (Shape{2, 3, 4, 1}));
  EXPECT_EQ(t.unsqueeze(0).squeeze(0).shape(), t.shape());
  EXPECT_EQ(t.flatten(1).shape(), (Shape{2, 12}));
}

TEST(Tensor, ViewOfNonContiguousChunks) {
  Tensor t = iota_f({4, 6}).slice(1, 0, 4, 2);  // (4, 2) stride (6, 2): rows have gaps
  EXPECT_THROW(t.view({8}), Error);
  Tensor t2 = iota_f({4, 6}).slice(1, 0, 6, 2);  // (4, 3) stride (6, 2) is evenly spaced
  EXPECT_EQ(t2.view({12}).strides(), (Shape{2}));
  Tensor u = iota_f({2, 3, 4}).permute({1, 0, 2});  // (3, 2, 4)
  EXPECT_THROW(u.view({3, 8}), Error);  // (2, 4) with strides (12, 1) cannot merge
  Tensor v = u.view({3, 2, 2, 2});       // splitting a dim always works
  EXPECT_EQ(v.strides(), (Shape{4, 12, 2, 1}));
  EXPECT_EQ(u.reshape({3, 8}).contiguous().to_vector<float>(), u.contiguous().reshape({3, 8}).to_vector<float>());
}

TEST(Tensor, CopyAndDtypeConversion) {
  Tensor a = iota_f({2, 3});
  Tensor d = a.to(DType::Float64);
  EXPECT_EQ(d.dtype(), DType::Float64);
  EXPECT_EQ(d.to_vector<double>()[5], 5.0);
  Tensor i = a.to(DType::Int64);
  EXPECT_EQ(i.to_vector<int64_t>()[4], 4);
  Tensor z = Tensor::zeros({3, 2});
  z.copy_(a.transpose(0, 1));
  EXPECT_EQ(z.to_vector<float>(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  Tensor c = a.clone();
  c.fill_(7);
  EXPECT_EQ(a.to_vector<float>()[0], 0.0f);
}

TEST(Tensor, BroadcastingArithmetic) {
  Tensor a = iota_f({2, 1, 3});
  Tensor b = Tensor::from_vector<float>({10, 20}, {2, 1});
  Tensor c = a + b;  // (2, 2, 3)
  EXPECT_EQ(c.shape(), (Shape{2, 2, 3}));
  std::vector<float> v = c.to_vector<float>();
  EXPECT_FLOAT_EQ(v[0], 10);   // a[0,0,0] + b[0]
  EXPECT_FLOAT_EQ(v[3], 20);   // a[0,0,0] + b[1]
  EXPECT_FLOAT_EQ(v[11], 25);  // a[1,0,2] + b[1]
  Tensor d = a * 2.0 - 1.0;
  EXPECT_FLOAT_EQ(d.to_vector<float>()[2], 3);
  Tensor s = Tensor::scalar(3.0);
  EXPECT_EQ((a / s).shape(), a.shape());
}

TEST(Tensor, BroadcastErrorNamesBothShapesAndOp) {
  Tensor a = Tensor::zeros({2, 3});
  Tensor b = Tensor::zeros({4});
  try {
    ops::add(a, b);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("add"), std::string::npos) << m;
    EXPECT_NE(m.find("(2, 3)"), std::string::npos) << m;
    EXPECT_NE(m.find("(4,)"), std::string::npos) << m;
  }
  try {
    ops::matmul(Tensor::zeros({2, 3}), Tensor::zeros({4, 5}));
    FAIL();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("matmul"), std::string::npos) << m;
    EXPECT_NE(m.find("(2, 3)"), std::string::npos) << m;
    EXPECT_NE(m.find("(4, 5)"), std::string::npos) << m;
  }
  EXPECT_THROW(ops::add(Tensor::zeros({2}), Tensor::zeros({2}, DType::Float64)), Error);
}

TEST(Tensor, IndexErrors) {
  Tensor x = iota_f({2, 3});
  Tensor idx = Tensor::from_vector<int64_t>({0, 5, 1, 1, 1, 1}, {2, 3});
  try {
    ops::gather(x, 1, idx);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("index 5 out of range"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ops::index_select(x, 0, Tensor::from_vector<int64_t>({2}, {1})), Error);
  EXPECT_THROW(x.select(0, 2), Error);
  EXPECT_THROW(ops::topk(x, 4, 1), Error);
  EXPECT_THROW(x.size(3), Error);
  EXPECT_THROW(ops::cross_entropy(x, Tensor::from_vector<int64_t>({0, 3}, {2})), Error);
}

TEST(Tensor, ToStringShowsShapeAndValues) {
  Tensor t = iota_f({2, 2});
  std::string s = t.to_string();
  EXPECT_NE(s.find("float32"), std::string::npos);
  EXPECT_NE(s.find("(2, 2)"), std::string::npos);
  EXPECT_NE(s.find("3"), std::string::npos);
}

TEST(Tensor, Float64OnlyOnCpu) {
  EXPECT_THROW(Tensor::empty({2}, DType::Float64, Device::cuda(0)), Error);
}

TEST(Tensor, DeviceParsing) {
  EXPECT_TRUE(parse_device("cpu").is_cpu());
  EXPECT_EQ(parse_device("cuda:1").index, 1);
  EXPECT_THROW(parse_device("gpu"), Error);
  EXPECT_THROW(parse_device("cuda:x"), Error);
}

}  // namespace
}  // namespace ipsnet

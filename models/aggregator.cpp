#include "models/aggregator.h"

#include <cmath>

namespace ipsnet {

namespace {

void check_options(const AggregatorOptions& o) {
  IPSNET_CHECK(o.n_token() > 0 && o.H() > 0 && o.D() > 0 && o.D_k() > 0 && o.D_v() > 0 && o.D_inner() > 0,
               "Transformer: sizes must be positive, got n_token ", o.n_token(), " H ", o.H(), " D ", o.D(),
               " D_k ", o.D_k(), " D_v ", o.D_v(), " D_inner ", o.D_inner());
}

std::shared_ptr<Dropout> make_dropout(double p, const AggregatorOptions& o, uint64_t stream, Generator* gen) {
  return std::make_shared<Dropout>(DropoutOptions(p).seed(o.dropout_seed()).stream(stream), gen);
}

}  // namespace

// ---- MultiHeadCrossAttention ------------------------------------------------------

MultiHeadCrossAttention::MultiHeadCrossAttention(const AggregatorOptions& o, Generator& gen, Generator* dropout_gen)
    : Module("MultiHeadCrossAttention"), options_(o) {
  check_options(o);
  double b = std::sqrt(1.0 / static_cast<double>(o.D_k()));
  q_ = register_parameter("q", init::uniform({1, o.n_token(), o.D()}, gen, -b, b, o.dtype()));
  q_w_ = register_module("q_w", std::make_shared<Linear>(
                                    LinearOptions(o.D(), o.H() * o.D_k()).bias(false).dtype(o.dtype()), gen));
  k_w_ = register_module("k_w", std::make_shared<Linear>(
                                    LinearOptions(o.D(), o.H() * o.D_k()).bias(false).dtype(o.dtype()), gen));
  v_w_ = register_module("v_w", std::make_shared<Linear>(
                                    LinearOptions(o.D(), o.H() * o.D_v()).bias(false).dtype(o.dtype()), gen));
  fc_ = register_module("fc", std::make_shared<Linear>(
                                  LinearOptions(o.H() * o.D_v(), o.D()).bias(false).dtype(o.dtype()), gen));
  attn_dropout_ = register_module("attn_dropout", make_dropout(o.attn_dropout(), o, 0, dropout_gen));
  dropout_ = register_module("dropout", make_dropout(o.dropout(), o, 1, dropout_gen));
  layer_norm_ = register_module("layer_norm",
                                std::make_shared<LayerNorm>(LayerNormOptions(o.D()).eps(1e-6).dtype(o.dtype())));
}

Tensor MultiHeadCrossAttention::get_attn(const Tensor& x) {
  check_defined(x, "MultiHeadCrossAttention", "x");
  IPSNET_CHECK(x.dim() == 3 && x.size(2) == options_.D(), "MultiHeadCrossAttention: input ", shape_str(x.shape()),
               " must be (B, L, D) with D = ", options_.D());
  const int64_t B = x.size(0), L = x.size(1), H = options_.H(), T = options_.n_token(), Dk = options_.D_k();
  Tensor q = q_w_->forward(q_).view({1, T, H, Dk}).transpose(1, 2);  // (1, H, T, D_k)
  Tensor k = k_w_->forward(x).view({B, L, H, Dk}).transpose(1, 2);   // (B, H, L, D_k)
  Tensor logits = ops::matmul(q / std::sqrt(static_cast<double>(Dk)), k.transpose(2, 3));  // (B, H, T, L)
  return attn_dropout_->forward(ops::softmax(logits, -1));
}

std::pair<Tensor, Tensor> MultiHeadCrossAttention::forward_with_heads(const Tensor& x) {
  Tensor attn = get_attn(x);  // (B, H, T, L)
  const int64_t B = x.size(0), L = x.size(1), H = options_.H(), T = options_.n_token(), Dv = options_.D_v();
  Tensor v = v_w_->forward(x).view({B, L, H, Dv}).transpose(1, 2);  // (B, H, L, D_v)
  Tensor heads = ops::matmul(attn, v);                                // (B, H, T, D_v)
  Tensor cat = heads.transpose(1, 2).reshape({B, T, H * Dv});        // (B, T, H*D_v)
  Tensor y = dropout_->forward(fc_->forward(cat)) + q_;              // residual with the raw queries
  return {layer_norm_->forward(y), heads};
}

Tensor MultiHeadCrossAttention::forward(const Tensor& x) { return forward_with_heads(x).first; }

// ---- MLP ------------------------------------------------------------------------

MLP::MLP(const AggregatorOptions& o, Generator& gen, Generator* dropout_gen) : Module("MLP") {
  check_options(o);
  w_1_ = register_module("w_1", std::make_shared<Linear>(LinearOptions(o.D(), o.D_inner()).dtype(o.dtype()), gen));
  w_2_ = register_module("w_2", std::make_shared<Linear>(LinearOptions(o.D_inner(), o.D()).dtype(o.dtype()), gen));
  layer_norm_ = register_module("layer_norm",
                                std::make_shared<LayerNorm>(LayerNormOptions(o.D()).eps(1e-6).dtype(o.dtype())));
  dropout_ = register_module("dropout", make_dropout(o.dropout(), o, 2, dropout_gen));
}

Tensor MLP::forward(const Tensor& x) {
  Tensor y = dropout_->forward(w_2_->forward(ops::relu(w_1_->forward(x))));
  return layer_norm_->forward(y + x);
}

// ---- Transformer ------------------------------------------------------------------

Transformer::Transformer(const AggregatorOptions& o, Generator& gen, Generator* dropout_gen)
    : Module("Transformer"), options_(o) {
  crs_attn_ = register_module("crs_attn", std::make_shared<MultiHeadCrossAttention>(o, gen, dropout_gen));
  mlp_ = register_module("mlp", std::make_shared<MLP>(o, gen, dropout_gen));
}

Tensor Transformer::forward(const Tensor& x) { return mlp_->forward(crs_attn_->forward(x)); }

std::pair<Tensor, Tensor> Transformer::forward_with_heads(const Tensor& x) {
  auto r = crs_attn_->forward_with_heads(x);
  return {mlp_->forward(r.first), r.second};
}

Tensor Transformer::get_scores(const Tensor& x) {
  Tensor attn = crs_attn_->get_attn(x);     // (B, H, T, L)
  return ops::mean(ops::mean(attn, {1}), {1});  // heads, then tokens -> (B, L)
}

// ---- positional encoding and feature projector ------------------------------------

Tensor sinusoidal_positional_encoding(int64_t n_pos, int64_t D, DType dtype, Device device) {
  IPSNET_CHECK(D > 0 && D % 2 == 0, "sinusoidal_positional_encoding: D must be even and positive, got ", D);
  IPSNET_CHECK(n_pos >= 0, "sinusoidal_positional_encoding: n_pos must be >= 0, got ", n_pos);
  std::vector<double> pe(static_cast<size_t>(n_pos * D));
  for (int64_t i = 0; i < D / 2; ++i) {
    double w = std::exp(-std::log(10000.0) * static_cast<double>(2 * i) / static_cast<double>(D));
    for (int64_t p = 0; p < n_pos; ++p) {
      pe[static_cast<size_t>(p * D + 2 * i)] = std::sin(static_cast<double>(p) * w);
      pe[static_cast<size_t>(p * D + 2 * i + 1)] = std::cos(static_cast<double>(p) * w);
    }
  }
  return Tensor::from_vector<double>(pe, {n_pos, D}).to(dtype).to(device);
}

std::shared_ptr<Sequential> make_feature_projector(int64_t F, int64_t D, Generator& gen, DType dtype) {
  auto seq = std::make_shared<Sequential>();
  seq->push_back(std::make_shared<LayerNorm>(LayerNormOptions(F).elementwise_affine(false).dtype(dtype)));
  seq->push_back(std::make_shared<Linear>(LinearOptions(F, D).dtype(dtype), gen));
  seq->push_back(std::make_shared<BatchNorm1d>(BatchNormOptions(D).dtype(dtype)));
  seq->push_back(std::make_shared<ReLU>());
  return seq;
}

}  // namespace ipsnet

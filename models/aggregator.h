// The IPS cross-attention aggregator (SPEC section 2): one transformer layer
// whose learnable query tokens cross-attend to the patch embeddings, followed
// by a position-wise MLP. Parameter names match the PyTorch reference:
//   transf.crs_attn.q                              (1, n_token, D)
//   transf.crs_attn.{q_w,k_w,v_w,fc}.weight        (no biases)
//   transf.crs_attn.layer_norm.{weight,bias}       (eps 1e-6)
//   transf.mlp.{w_1,w_2}.{weight,bias}, transf.mlp.layer_norm.{weight,bias}
// (the `transf.` prefix comes from IPSNet registering a Transformer as "transf").
#pragma once
#include <memory>

#include "layers/layers.h"

namespace ipsnet {

struct AggregatorOptions {
  IPSNET_ARG(int64_t, n_token) = 1;
  IPSNET_ARG(int64_t, H) = 8;
  IPSNET_ARG(int64_t, D) = 512;
  IPSNET_ARG(int64_t, D_k) = 64;
  IPSNET_ARG(int64_t, D_v) = 64;
  IPSNET_ARG(int64_t, D_inner) = 2048;
  IPSNET_ARG(double, attn_dropout) = 0.1;
  IPSNET_ARG(double, dropout) = 0.1;
  /// Seed of the module-owned dropout generators (used when no dropout
  /// generator is passed to the constructor).
  IPSNET_ARG(uint64_t, dropout_seed) = 0;
  IPSNET_ARG(DType, dtype) = DType::Float32;
};

/// Multi-head cross-attention with learnable queries (reference:
/// MultiHeadCrossAttention). Children: q_w, k_w, v_w, fc (Linear, no bias),
/// layer_norm (eps 1e-6), attn_dropout, dropout; parameter q.
class MultiHeadCrossAttention : public Module {
 public:
  /// Init: q ~ U(-sqrt(1/D_k), +sqrt(1/D_k)), then q_w, k_w, v_w, fc as Linear,
  /// in that order from `gen`. Dropout draws from `dropout_gen` when given.
  MultiHeadCrossAttention(const AggregatorOptions& options, Generator& gen, Generator* dropout_gen = nullptr);

  /// Attention weights dropout(softmax((q/sqrt(D_k)) k^T)) over the patch axis.
  /// x: (B, L, D) -> (B, H, n_token, L)
  Tensor get_attn(const Tensor& x);
  /// x: (B, L, D) -> (B, n_token, D): LN(dropout(fc(concat_h O_h)) + q)
  Tensor forward(const Tensor& x) override;
  /// As forward, also returning the per-head outputs O_h = attn_h v_h
  /// stacked as (B, H, n_token, D_v) (before fc; for the semantic/diversity losses).
  std::pair<Tensor, Tensor> forward_with_heads(const Tensor& x);

  Tensor q_;  // (1, n_token, D)
  std::shared_ptr<Linear> q_w_, k_w_;  // D -> H*D_k
  std::shared_ptr<Linear> v_w_;        // D -> H*D_v
  std::shared_ptr<Linear> fc_;         // H*D_v -> D
  std::shared_ptr<LayerNorm> layer_norm_;
  std::shared_ptr<Dropout> attn_dropout_, dropout_;

 private:
  AggregatorOptions options_;
};

/// Position-wise MLP with post-norm residual (reference: MLP):
/// LN(dropout(w_2(relu(w_1 x))) + x).
class MLP : public Module {
 public:
  MLP(const AggregatorOptions& options, Generator& gen, Generator* dropout_gen = nullptr);
  /// x: (..., D) -> (..., D)
  Tensor forward(const Tensor& x) override;
  std::shared_ptr<Linear> w_1_;  // D -> D_inner
  std::shared_ptr<Linear> w_2_;  // D_inner -> D
  std::shared_ptr<LayerNorm> layer_norm_;
  std::shared_ptr<Dropout> dropout_;
};

/// The aggregator (reference: Transformer): children crs_attn and mlp.
class Transformer : public Module {
 public:
  Transformer(const AggregatorOptions& options, Generator& gen, Generator* dropout_gen = nullptr);
  /// x: (B, L, D) -> (B, n_token, D)
  Tensor forward(const Tensor& x) override;
  /// Per-patch selection scores: attention weights averaged over heads, then
  /// over tokens. x: (B, L, D) -> (B, L)
  Tensor get_scores(const Tensor& x);
  /// x: (B, L, D) -> {tokens (B, n_token, D), heads O_h (B, H, n_token, D_v)}
  std::pair<Tensor, Tensor> forward_with_heads(const Tensor& x);
  const AggregatorOptions& options() const { return options_; }

  std::shared_ptr<MultiHeadCrossAttention> crs_attn_;
  std::shared_ptr<MLP> mlp_;

 private:
  AggregatorOptions options_;
};

/// Fixed 1-D sinusoidal positional encoding (SPEC section 2):
/// pe[p, 2i] = sin(p w_i), pe[p, 2i+1] = cos(p w_i), w_i = exp(-ln(10000) 2i / D).
/// D must be even. Returns (n_pos, D).
Tensor sinusoidal_positional_encoding(int64_t n_pos, int64_t D, DType dtype = DType::Float32,
                                      Device device = Device::cpu());

/// Encoder for non-image inputs (pre-extracted features): a Sequential
/// LayerNorm(F, no affine) -> Linear(F, D) -> BatchNorm1d(D) -> ReLU, so its
/// parameters are named `1.weight`, `1.bias`, `2.weight`, `2.running_mean`, ...
/// x: (n, F) -> (n, D)
std::shared_ptr<Sequential> make_feature_projector(int64_t F, int64_t D, Generator& gen,
                                                   DType dtype = DType::Float32);

}  // namespace ipsnet

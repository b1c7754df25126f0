#include "models/ips_selection.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <unordered_map>

namespace ipsnet {

namespace {

// The zero-patch shortcut: the embedding of an all-zero patch, computed the
// first time a selection meets one (eval-mode BN makes it a constant).
struct ZeroEmbedding {
  bool enabled = false;
  bool identical = false;  // also encode identical non-zero patches once per chunk
  Tensor emb;  // (D) once computed
  Tensor emb_fp32;  // (D) with float32 convolutions, for rescore_boundary
};

// 64-bit FNV-1a over a patch's bytes.
uint64_t hash_bytes(const unsigned char* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// Encodes px (n, C, h, w); with `identical`, bytewise-identical patches
// (contiguous CPU tensors) are encoded once: hashed, compared in full, and the
// first one's embedding copied to the others. Returns (n, D); adds the encoder rows run.
Tensor encode_unique(IPSNet& net, const Tensor& px, bool identical, int64_t* n_encoded) {
  const int64_t n = px.size(0);
  // Image patches only (4-D), contiguous on the CPU: feature rows are almost
  // never repeated and hashing them costs a pass over the whole bag.
  if (!identical || n < 2 || px.dim() != 4 || !px.device().is_cpu() || !px.is_contiguous()) {
    *n_encoded += n;
    return net.encode(px);
  }
  const size_t row = static_cast<size_t>(px.numel() / n) * dtype_size(px.dtype());
  const auto* base = static_cast<const unsigned char*>(px.raw_data());
  std::unordered_map<uint64_t, std::vector<int64_t>> reps;  // hash -> representative rows
  std::vector<int64_t> unique_rows, of(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const unsigned char* r = base + static_cast<size_t>(i) * row;
    std::vector<int64_t>& cands = reps[hash_bytes(r, row)];
    int64_t found = -1;
    for (int64_t c : cands)
      if (std::memcmp(base + static_cast<size_t>(unique_rows[static_cast<size_t>(c)]) * row, r, row) == 0) {
        found = c;
        break;
      }
    if (found < 0) {
      found = static_cast<int64_t>(unique_rows.size());
      unique_rows.push_back(i);
      cands.push_back(found);
    }
    of[static_cast<size_t>(i)] = found;
  }
  const int64_t u = static_cast<int64_t>(unique_rows.size());
  *n_encoded += u;
  if (u == n) return net.encode(px);
  Tensor emb = net.encode(ops::index_select(px, 0, Tensor::from_vector(unique_rows, {u})));  // (u, D)
  return ops::index_select(emb, 0, Tensor::from_vector(of, {n}));
}

// out (n, D) with row slot[i] replaced by emb[i] (any device): those rows
// cleared, then the new ones scatter-added.
Tensor set_rows(const Tensor& out, const std::vector<int64_t>& slot, const Tensor& emb) {
  const int64_t n = out.size(0), D = out.size(1);
  Tensor rows = Tensor::from_vector(slot, {static_cast<int64_t>(slot.size())}, emb.device());
  std::vector<float> m(static_cast<size_t>(n), 0.0f);
  for (int64_t s : slot) m[static_cast<size_t>(s)] = 1.0f;
  Tensor mask = Tensor::from_vector(m, {n, 1}).to(out.dtype()).to(out.device());
  Tensor base = ops::masked_fill(out, mask, 0.0);
  return ops::scatter_add(base, 0, rows.unsqueeze(1).expand({rows.size(0), D}).contiguous(), emb);
}

// Encodes the (b, p) patches listed in rows of idx (B, k), skipping known-zero
// patches and encoding identical ones once when the shortcuts are on.
// Returns (B, k, D).
Tensor encode_patches(IPSNet& net, PatchSource& src, const std::vector<std::vector<int64_t>>& idx,
                      ZeroEmbedding& zero, int64_t* n_encoded) {
  const int64_t B = static_cast<int64_t>(idx.size());
  const int64_t k = B ? static_cast<int64_t>(idx[0].size()) : 0;
  std::vector<int64_t> img, pat, slot;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < k; ++j) {
      int64_t p = idx[static_cast<size_t>(b)][static_cast<size_t>(j)];
      if (zero.enabled && src.is_zero(b, p)) {
        if (!zero.emb.defined()) {
          zero.emb = net.encode(src.get({b}, {p})).reshape({net.D()});
          *n_encoded += 1;
        }
        continue;
      }
      img.push_back(b);
      pat.push_back(p);
      slot.push_back(b * k + j);
    }
  const Tensor& zero_emb = zero.emb;
  const int64_t D = net.D();
  if (static_cast<int64_t>(img.size()) == B * k)
    return encode_unique(net, src.get(img, pat), zero.identical, n_encoded).reshape({B, k, D});
  // Start from the zero embedding everywhere, then place the encoded rows.
  Tensor out = zero_emb.reshape({1, D}).expand({B * k, D}).contiguous();
  if (!img.empty()) out = set_rows(out, slot, encode_unique(net, src.get(img, pat), zero.identical, n_encoded));
  return out.reshape({B, k, D});
}

// bf16 selection made to select what float32 selects (IPSOptions::bf16_margin):
// the candidates (B, L, D) whose scores lie near image b's top-M boundary,
// closer than the relative margin r could move them, are encoded again with
// float32 convolutions and all scores recomputed, until no candidate still
// in bf16 lies near the boundary. With t_M >= t_M+1 the M-th and (M+1)-th
// largest scores, a selected candidate can leave if s (1 - r) < t_M+1 (1 + r)
// and an unselected one can enter if s (1 + r) > t_M (1 - r): so the window
// is (t_M (1 - r) / (1 + r), t_M+1 (1 + r) / (1 - r)). `exact` marks the
// candidates already in float32 (carried with the memory). Returns how many
// candidates were encoded again.
int64_t rescore_boundary(IPSNet& net, PatchSource& src, const std::vector<std::vector<int64_t>>& cand_idx,
                         const Tensor& idx_t, int64_t M, double r, ZeroEmbedding& zero,
                         std::vector<std::vector<char>>& exact, Tensor& cand_emb, Tensor& scores) {
  const int64_t B = cand_emb.size(0), L = cand_emb.size(1), D = cand_emb.size(2);
  if (M >= L) return 0;
  int64_t n = 0;
  for (int64_t round = 0; round < L; ++round) {  // each round makes at least one more candidate exact
    const std::vector<double> s = scores.to(Device::cpu()).to(DType::Float64).contiguous().to_vector<double>();
    std::vector<int64_t> img, pat, slot, zero_slot;
    std::vector<double> row(static_cast<size_t>(L));
    for (int64_t b = 0; b < B; ++b) {
      const double* sb = s.data() + b * L;
      row.assign(sb, sb + L);
      std::nth_element(row.begin(), row.begin() + M, row.end(), std::greater<double>());
      const double t_next = row[static_cast<size_t>(M)];  // the (M+1)-th largest
      const double t_m = *std::min_element(row.begin(), row.begin() + M);  // the M-th largest
      const double lo = t_m * (1 - r) / (1 + r), hi = t_next * (1 + r) / (1 - r);
      std::vector<char>& ex = exact[static_cast<size_t>(b)];
      bool in_window = false;
      for (int64_t j = 0; j < L; ++j) in_window |= !ex[static_cast<size_t>(j)] && sb[j] > lo && sb[j] < hi;
      // A near-tie left between float32 candidates (zero patches told apart
      // by their positions alone, say) can still be flipped by the rounding
      // of the others through the softmax's normalisers: when the boundary
      // gap is under r / 5 of the score, the whole image's candidates go to
      // float32 (on a quickstart checkpoint, r = 0.005 with r / 5 gave the
      // float32 selection on all 300 test images, r / 10 and r / 50 on 299:
      // BENCHMARKS.md, "bf16 selection at the boundary").
      const bool all = !in_window && t_m - t_next < r / 5 * t_next;
      for (int64_t j = 0; j < L; ++j)
        if (!ex[static_cast<size_t>(j)] && (all || (sb[j] > lo && sb[j] < hi))) {
          ex[static_cast<size_t>(j)] = 1;
          const int64_t p = cand_idx[static_cast<size_t>(b)][static_cast<size_t>(j)];
          if (zero.enabled && src.is_zero(b, p)) {
            zero_slot.push_back(b * L + j);  // all share one float32 zero embedding
            continue;
          }
          img.push_back(b);
          pat.push_back(p);
          slot.push_back(b * L + j);
        }
    }
    if (img.empty() && zero_slot.empty()) break;
    ConvBf16Guard fp32(false);
    Tensor flat = cand_emb.reshape({B * L, D});
    if (!zero_slot.empty()) {
      if (!zero.emb_fp32.defined()) {
        const int64_t z = zero_slot[0];
        zero.emb_fp32 = net.encode(src.get({z / L}, {cand_idx[static_cast<size_t>(z / L)][static_cast<size_t>(z % L)]}))
                            .reshape({D});
        n += 1;
      }
      flat = set_rows(flat, zero_slot,
                      zero.emb_fp32.reshape({1, D}).expand({static_cast<int64_t>(zero_slot.size()), D}).contiguous());
    }
    if (!img.empty()) {
      int64_t encoded = 0;
      flat = set_rows(flat, slot, encode_unique(net, src.get(img, pat), zero.identical, &encoded));
      n += encoded;
    }
    cand_emb = flat.reshape({B, L, D});
    scores = net.score(cand_emb, idx_t);
  }
  return n;
}

// Rows of per-image index lists as a (B, k) int64 tensor.
Tensor index_tensor(const std::vector<std::vector<int64_t>>& idx) {
  const int64_t B = static_cast<int64_t>(idx.size()), k = B ? static_cast<int64_t>(idx[0].size()) : 0;
  std::vector<int64_t> flat;
  flat.reserve(static_cast<size_t>(B * k));
  for (const auto& row : idx) flat.insert(flat.end(), row.begin(), row.end());
  return Tensor::from_vector(flat, {B, k});
}

// The order in which each image's patches are visited: the grid order, or a
// permutation shared by the batch or drawn per image (random tie-breaking
// among equal scores, SPEC section 1 step 2).
std::vector<std::vector<int64_t>> visiting_order(int64_t B, int64_t N, const IPSOptions& opt, Generator& gen) {
  std::vector<std::vector<int64_t>> order(static_cast<size_t>(B));
  std::vector<int64_t> shared;
  if (opt.shuffle && !opt.instance_shuffle) shared = gen.permutation(N);
  for (auto& row : order) {
    if (!opt.shuffle) {
      row.resize(static_cast<size_t>(N));
      for (int64_t p = 0; p < N; ++p) row[static_cast<size_t>(p)] = p;
    } else {
      row = opt.instance_shuffle ? gen.permutation(N) : shared;
    }
  }
  return order;
}

// STKIM: the selection scores with each of the top-K candidates zeroed with
// probability mask_p (scores (B, L); the scores themselves are kept).
Tensor mask_top_candidates(const Tensor& scores, const IPSOptions& opt, Generator& gen) {
  const int64_t B = scores.size(0), L = scores.size(1), K = std::min(opt.mask_K, L);
  Tensor top = ops::topk(scores, K, 1).second.to(Device::cpu());
  Tensor mask = Tensor::zeros({B, L}, scores.dtype(), Device::cpu());
  const int64_t* tp = top.data<int64_t>();
  float* mp = mask.data<float>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < K; ++j)
      if (gen.bernoulli(opt.mask_p)) mp[b * L + tp[b * K + j]] = 1.0f;
  return ops::masked_fill(scores, mask.to(scores.device()), 0.0);
}

}  // namespace

Tensor PatchSource::get_rows(const Tensor& idx) {
  Tensor cpu = idx.to(Device::cpu()).contiguous();
  const int64_t B = cpu.size(0), k = cpu.size(1);
  std::vector<int64_t> img(static_cast<size_t>(B * k)), pat(cpu.data<int64_t>(), cpu.data<int64_t>() + B * k);
  for (int64_t i = 0; i < B * k; ++i) img[static_cast<size_t>(i)] = i / k;
  return get(img, pat);
}

SelectionResult ips_select(IPSNet& net, PatchSource& src, const IPSOptions& opt, Generator& gen) {
  const int64_t B = src.batch(), N = src.num_patches(), M = opt.M, I = opt.I;
  IPSNET_CHECK(M >= 1 && I >= 1, "ips: M and I must be >= 1, got M = ", M, ", I = ", I);
  IPSNet::SelectionScope scope(net, opt.fold_bn);
  // precision: bf16 selects as selection_bf16 does: the encoder's
  // convolutions in bfloat16, everything else (the projection, the scores
  // that rank the candidates) in float32. Those are a few (M + I) x D
  // products per image, nothing next to the encoder; with them in bf16 too,
  // rounding swapped near-ties and changed 6.3 % of the quickstart's
  // selected sets (scripts/bf16_agreement.py --key precision, BENCHMARKS.md).
  const bool conv_bf16 = opt.bf16 || precision_bf16_enabled();
  PrecisionGuard fp32_rest(false);
  ConvBf16Guard bf16(conv_bf16);
  SelectionResult res;
  ZeroEmbedding zero_emb;
  zero_emb.enabled = opt.dedup_zero;
  zero_emb.identical = opt.dedup_identical;

  if (M >= N || opt.score_all) {
    std::vector<std::vector<int64_t>> all(static_cast<size_t>(B), std::vector<int64_t>(static_cast<size_t>(N)));
    for (auto& row : all)
      for (int64_t p = 0; p < N; ++p) row[static_cast<size_t>(p)] = p;
    if (opt.score_all) {
      Tensor emb = encode_patches(net, src, all, zero_emb, &res.n_encoded);
      res.all_scores = net.score(emb, index_tensor(all)).to(Device::cpu());
    }
    if (M >= N) {
      // No selection: all N patches are used.
      res.idx = Tensor::arange(N).reshape({1, N}).expand({B, N}).contiguous();
      if (opt.score_all) res.scores = res.all_scores;
      if (opt.return_patches) res.patches = src.get_rows(res.idx);
      return res;
    }
  }

  std::vector<std::vector<int64_t>> order = visiting_order(B, N, opt, gen);
  auto take = [&](int64_t s, int64_t e) {
    std::vector<std::vector<int64_t>> out(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b)
      out[static_cast<size_t>(b)].assign(order[static_cast<size_t>(b)].begin() + s,
                                          order[static_cast<size_t>(b)].begin() + e);
    return out;
  };

  std::vector<std::vector<int64_t>> mem_idx = take(0, M);
  Tensor mem_emb = encode_patches(net, src, mem_idx, zero_emb, &res.n_encoded);  // (B, M, D)
  Tensor mem_scores;
  const bool rescore = conv_bf16 && opt.bf16_margin > 0;
  std::vector<std::vector<char>> mem_exact(rescore ? static_cast<size_t>(B) : 0, std::vector<char>(static_cast<size_t>(M), 0));
  const int64_t n_iter = (N - M + I - 1) / I;
  for (int64_t it = 0; it < n_iter; ++it) {
    const int64_t s = M + it * I, e = std::min(s + I, N);
    std::vector<std::vector<int64_t>> cand_idx = mem_idx, iter_idx = take(s, e);
    for (int64_t b = 0; b < B; ++b)
      cand_idx[static_cast<size_t>(b)].insert(cand_idx[static_cast<size_t>(b)].end(),
                                              iter_idx[static_cast<size_t>(b)].begin(),
                                              iter_idx[static_cast<size_t>(b)].end());
    Tensor cand_emb = ops::cat({mem_emb, encode_patches(net, src, iter_idx, zero_emb, &res.n_encoded)}, 1);  // (B, L, D)
    const Tensor cand_idx_t = index_tensor(cand_idx);
    Tensor scores = net.score(cand_emb, cand_idx_t);  // (B, L)
    std::vector<std::vector<char>> cand_exact;  // rescore only: the candidates already in float32
    if (rescore) {
      cand_exact = mem_exact;
      for (auto& row : cand_exact) row.resize(static_cast<size_t>(cand_emb.size(1)), 0);
      res.n_rescored +=
          rescore_boundary(net, src, cand_idx, cand_idx_t, M, opt.bf16_margin, zero_emb, cand_exact, cand_emb, scores);
    }
    Tensor sel_scores = opt.mask_K > 0 && opt.mask_p > 0 ? mask_top_candidates(scores, opt, gen) : scores;
    Tensor top = ops::topk(sel_scores, M, 1).second;  // (B, M)
    mem_emb = ops::gather(cand_emb, 1, top.unsqueeze(-1).expand({B, M, cand_emb.size(2)}).contiguous());
    mem_scores = ops::gather(scores, 1, top);
    Tensor top_cpu = top.to(Device::cpu());
    const int64_t* tp = top_cpu.data<int64_t>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < M; ++j) {
        const size_t c = static_cast<size_t>(tp[b * M + j]);
        mem_idx[static_cast<size_t>(b)][static_cast<size_t>(j)] = cand_idx[static_cast<size_t>(b)][c];
        if (rescore) mem_exact[static_cast<size_t>(b)][static_cast<size_t>(j)] = cand_exact[static_cast<size_t>(b)][c];
      }
  }
  res.idx = index_tensor(mem_idx);
  res.scores = mem_scores.defined() ? mem_scores.to(Device::cpu()) : Tensor();
  mem_emb = Tensor();
  if (opt.return_patches) res.patches = src.get_rows(res.idx);
  return res;
}

}  // namespace ipsnet

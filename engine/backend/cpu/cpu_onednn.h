// oneDNN plumbing for the CPU backend's fast float32 path (internal header):
// the engine, a per-thread stream, a thread-safe primitive cache keyed by
// geometry, wrapping of contiguous tensors as plain-layout memory, and the
// reference/oneDNN switch.
#pragma once
#include <dnnl.hpp>

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "engine/tensor/tensor.h"

namespace ipsnet {
namespace cpu {

dnnl::engine& onednn_engine();
/// One stream per calling thread (oneDNN streams are not meant to be shared).
dnnl::stream& onednn_stream();
/// True when float32 tensors should take the oneDNN path (the switch is "onednn").
bool use_onednn(DType dtype);

/// Wraps a contiguous float32 (or bfloat16) tensor as oneDNN memory of the
/// given plain layout (no copy).
inline dnnl::memory wrap(const Tensor& t, const dnnl::memory::dims& dims,
                         dnnl::memory::format_tag tag) {
  const auto dt = t.dtype() == DType::BFloat16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
  return dnnl::memory({dims, dt, tag}, onednn_engine(), t.raw_data());
}

/// Executes prim on this thread's stream and waits.
void onednn_run(const dnnl::primitive& prim, const std::unordered_map<int, dnnl::memory>& args);

/// Process-wide cache of built primitives by key; make() runs once per key
/// (outside the lock; a racing duplicate build is dropped).
template <typename Entry, typename Make>
std::shared_ptr<const Entry> onednn_cached(const std::string& key, Make&& make) {
  static std::mutex mu;
  static std::unordered_map<std::string, std::shared_ptr<const Entry>> cache;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  auto entry = std::make_shared<const Entry>(make());
  std::lock_guard<std::mutex> lock(mu);
  return cache.emplace(key, entry).first->second;
}

/// Rethrows a dnnl::error as ipsnet::Error naming the primitive and geometry.
[[noreturn]] void onednn_fail(const char* what, const std::string& geometry, const dnnl::error& e);

}  // namespace cpu
}  // namespace ipsnet

// oneDNN engine, streams, and the CPU conv/norm/pool implementation switch.
#include "engine/backend/cpu/cpu_onednn.h"

#include <atomic>
#include <cstdlib>

#include "engine/backend/cpu/cpu_backend.h"

namespace ipsnet {

namespace {
// 0 = not read yet, 1 = onednn, 2 = reference.
std::atomic<int> g_impl{0};

int parse_impl(const std::string& s) {
  if (s == "onednn") return 1;
  if (s == "reference") return 2;
  IPSNET_FAIL("set_cpu_conv_impl: expected \"onednn\" or \"reference\", got \"", s, "\"");
}

int current_impl() {
  int v = g_impl.load(std::memory_order_relaxed);
  if (v == 0) {
    const char* env = std::getenv("IPSNET_CPU_CONV");
    v = (env && *env) ? parse_impl(env) : 1;
    g_impl.store(v, std::memory_order_relaxed);
  }
  return v;
}
}  // namespace

void set_cpu_conv_impl(const std::string& impl) { g_impl.store(parse_impl(impl)); }

std::string cpu_conv_impl() { return current_impl() == 1 ? "onednn" : "reference"; }

namespace cpu {

dnnl::engine& onednn_engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

dnnl::stream& onednn_stream() {
  thread_local dnnl::stream s(onednn_engine());
  return s;
}

bool use_onednn(DType dtype) { return dtype == DType::Float32 && current_impl() == 1; }

void onednn_run(const dnnl::primitive& prim, const std::unordered_map<int, dnnl::memory>& args) {
  dnnl::stream& s = onednn_stream();
  prim.execute(s, args);
  s.wait();
}

void onednn_fail(const char* what, const std::string& geometry, const dnnl::error& e) {
  IPSNET_FAIL(what, " (oneDNN): ", e.what(), " (status ", static_cast<int>(e.status), ") for ",
              geometry);
}

}  // namespace cpu
}  // namespace ipsnet

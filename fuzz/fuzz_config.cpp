// libFuzzer harness: the YAML config loader (train/config.cpp): yaml-cpp's
// parser, every key's type and range checks, validate(), and the emitter's
// round trip (what to_yaml writes must read back to the same text).
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/common/error.h"
#include "train/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;  // deep YAML nesting recurses in yaml-cpp; keep inputs config-sized
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    ipsnet::train::Config c = ipsnet::train::parse_config(text, "<fuzz>");
    ipsnet::train::validate(c);
    const std::string y = ipsnet::train::to_yaml(c);
    ipsnet::train::Config d = ipsnet::train::parse_config(y, "<fuzz round trip>");
    if (ipsnet::train::to_yaml(d) != y) __builtin_trap();
  } catch (const ipsnet::Error&) {
  }
  return 0;
}

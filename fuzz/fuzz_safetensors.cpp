// libFuzzer harness: the safetensors reader (models/safetensors.cpp): header
// length, JSON header, dtypes, shapes, offsets, checksums and tensor data.
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/common/error.h"
#include "models/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Headers that announce more than the input holds are refused before any
  // allocation; bound the work of one input anyway.
  if (size > (1u << 20)) return 0;
  try {
    ipsnet::safetensors::File f =
        ipsnet::safetensors::deserialize(std::string(reinterpret_cast<const char*>(data), size), "<fuzz>");
    // What was read writes back and reads again to the same tensors.
    std::string again = ipsnet::safetensors::serialize(f.tensors, f.metadata);
    ipsnet::safetensors::File g = ipsnet::safetensors::deserialize(again, "<fuzz round trip>");
    if (g.tensors.size() != f.tensors.size()) __builtin_trap();
  } catch (const ipsnet::Error&) {
  }
  return 0;
}

// libFuzzer harness: the .npy reader (data/npy.cpp) on arbitrary bytes.
// Any input must either parse or throw ipsnet::Error; crashes, leaks,
// out-of-bounds reads and undefined behaviour are bugs.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "data/npy.h"
#include "engine/common/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes(data, data + size);
  try {
    ipsnet::data::NpyArray a = ipsnet::data::parse_npy(bytes, "<fuzz>");
    // The typed views must stay inside the bytes.
    if (a.descr == "<f4" || a.descr == "<f8")
      (void)a.as_double();
    else
      (void)a.as_int64();
  } catch (const ipsnet::Error&) {
  }
  return 0;
}

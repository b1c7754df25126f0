// Element types and devices.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace ipsnet {

/// Element types: float32 and int64 on every device, float64 on the CPU (gradient checks).
/// BFloat16 is storage only (saved activations under precision: bf16,
/// engine/tensor/bf16.h): tensors of it can be allocated, converted to and from
/// float32, copied and moved between devices; every other op refuses it.
enum class DType : uint8_t { Float32, Float64, Int64, BFloat16 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
inline bool is_floating(DType t) { return t == DType::Float32 || t == DType::Float64; }

template <typename T> struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::Float32; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::Float64; };
template <> struct DTypeOf<int64_t> { static constexpr DType value = DType::Int64; };

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  static Device cpu() { return {DeviceType::CPU, 0}; }
  static Device cuda(int i = 0) { return {DeviceType::CUDA, i}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const;
};

/// Parses "cpu", "cuda", "cuda:N". Throws on anything else.
Device parse_device(const std::string& s);

}  // namespace ipsnet

/// Calls the lambda body with scalar_t bound to the C++ type of a floating dtype.
#define IPSNET_DISPATCH_FLOAT(dtype, NAME, ...)                                       \
  [&] {                                                                               \
    switch (dtype) {                                                                  \
      case ::ipsnet::DType::Float32: { using scalar_t = float; return __VA_ARGS__(); } \
      case ::ipsnet::DType::Float64: { using scalar_t = double; return __VA_ARGS__(); } \
      default: IPSNET_FAIL(NAME, ": expected a floating dtype, got ", ::ipsnet::dtype_name(dtype)); \
    }                                                                                 \
  }()

/// As IPSNET_DISPATCH_FLOAT, plus int64.
#define IPSNET_DISPATCH_ALL(dtype, NAME, ...)                                          \
  [&] {                                                                               \
    switch (dtype) {                                                                  \
      case ::ipsnet::DType::Float32: { using scalar_t = float; return __VA_ARGS__(); } \
      case ::ipsnet::DType::Float64: { using scalar_t = double; return __VA_ARGS__(); } \
      case ::ipsnet::DType::Int64: { using scalar_t = int64_t; return __VA_ARGS__(); } \
      case ::ipsnet::DType::BFloat16: break;                                          \
    }                                                                                 \
    IPSNET_FAIL(NAME, ": ", ::ipsnet::dtype_name(dtype), " is storage only (convert it to float32 first)");                                             \
  }()

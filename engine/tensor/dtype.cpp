#include "engine/tensor/dtype.h"

#include "engine/common/error.h"

namespace ipsnet {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::Float32: return 4;
    case DType::Float64: return 8;
    case DType::Int64: return 8;
    case DType::BFloat16: return 2;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    case DType::Int64: return "int64";
    case DType::BFloat16: return "bfloat16";
  }
  return "?";
}

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::cpu();
  if (s == "cuda") return Device::cuda(0);
  if (s.rfind("cuda:", 0) == 0) {
    std::string n = s.substr(5);
    IPSNET_CHECK(!n.empty() && n.find_first_not_of("0123456789") == std::string::npos,
                 "device '", s, "': expected cpu, cuda or cuda:N");
    return Device::cuda(std::stoi(n));
  }
  IPSNET_FAIL("device '", s, "': expected cpu, cuda or cuda:N");
}

}  // namespace ipsnet

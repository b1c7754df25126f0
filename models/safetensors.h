// Reading and writing HuggingFace safetensors files.
//
// Layout: an 8-byte little-endian u64 N, then N bytes of UTF-8 JSON
//   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]},
//    ..., "__metadata__": {"key": "value", ...}}
// (optionally padded with spaces), then the data buffer; offsets are relative
// to the buffer start, data is row-major little-endian. ipsnet reads and
// writes F32, F64 and I64 (other dtypes give a clear error). Files written
// here load in PyTorch's `safetensors.torch.load_file` and vice versa.
#pragma once
#include <map>
#include <string>

#include "layers/module.h"

namespace ipsnet {
namespace safetensors {

struct File {
  TensorDict tensors;                          // in data-offset order
  std::map<std::string, std::string> metadata;  // the __metadata__ map
};

/// Reads a whole file into CPU tensors. Any problem (missing file, truncated
/// data, bad header, unsupported dtype, inconsistent offsets) throws one
/// Error naming the file and what is wrong.
File load(const std::string& path);
/// load(path).tensors
TensorDict load_tensors(const std::string& path);

/// Writes tensors (any device; copied to the host, made contiguous) in the
/// given order with 8-byte aligned header, to `path.tmp`, fsyncs, then
/// renames onto `path` (an interrupted write never leaves a partial file).
void save(const std::string& path, const TensorDict& tensors,
          const std::map<std::string, std::string>& metadata = {});

/// Serialises to / parses from an in-memory byte string (same format).
std::string serialize(const TensorDict& tensors, const std::map<std::string, std::string>& metadata = {});
File deserialize(const std::string& bytes, const std::string& what = "<memory>");

}  // namespace safetensors
}  // namespace ipsnet

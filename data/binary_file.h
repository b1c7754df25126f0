// Little pieces shared by ipsnet's binary dataset formats (data/dataset.cpp,
// data/photo_dataset.cpp): CRC-32, fixed-offset fields, read-only mappings.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

namespace ipsnet {
namespace data {

/// zlib's CRC-32 of n bytes (any length), continuing from crc.
uint32_t crc32_of(const void* p, size_t n, uint32_t crc = 0);

/// A field of type T at byte offset off (host byte order, unaligned).
template <typename T>
void put(uint8_t* p, size_t off, T v) {
  std::memcpy(p + off, &v, sizeof(T));
}
template <typename T>
T get(const uint8_t* p, size_t off) {
  T v;
  std::memcpy(&v, p + off, sizeof(T));
  return v;
}

/// A whole file mapped read-only (unmapped when the last reference goes).
struct MappedFile {
  const uint8_t* ptr = nullptr;
  size_t size = 0;
  ~MappedFile();
  /// Throws one line naming the file and the reason.
  static std::shared_ptr<MappedFile> map(const std::string& path);
};

}  // namespace data
}  // namespace ipsnet

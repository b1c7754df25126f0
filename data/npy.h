// Plain (non-pickled) NumPy .npy files: enough to exchange flat arrays with
// scripts/npy_convert.py, which handles the pickled reference layout.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ipsnet {
namespace data {

/// A loaded array: dtype descr ("<i8", "<f4", "<f8", "|u1"), shape, raw bytes (C order).
struct NpyArray {
  std::string descr;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
  int64_t numel() const;
  /// Values converted to int64 / double (accepts <i8, <i4, |u1, <f4, <f8).
  std::vector<int64_t> as_int64() const;
  std::vector<double> as_double() const;
};

/// The version-1.0 header of an array of `descr` and `shape` (magic, length,
/// the dict padded to 64 bytes): the data in C order follows it. For writers
/// that stream their data.
std::string npy_header(const std::string& descr, const std::vector<int64_t>& shape);

/// A parsed header: dtype, shape, element size, where the data starts, and
/// the element count the data must hold (overflow: beyond int64).
struct NpyHeader {
  std::string descr;
  std::vector<int64_t> shape;
  size_t itemsize = 0;
  size_t data_offset = 0;
  uint64_t numel = 0;
  bool overflow = false;
};
/// Parses the header at the start of `head` (at least the whole header; the
/// data may follow or not). The same checks as parse_npy, `path` in messages.
NpyHeader parse_npy_header(const std::vector<uint8_t>& head, const std::string& path);

/// Writes a version-1.0 .npy file; data holds numel * itemsize bytes. Every
/// write is checked.
void write_npy(const std::string& path, const std::string& descr, const std::vector<int64_t>& shape,
               const void* data, size_t bytes);
/// Reads a .npy file; throws on object arrays (pickles), Fortran order,
/// big-endian data or a truncated file.
NpyArray read_npy(const std::string& path);
/// The same on bytes in memory (`path` names them in messages; the fuzzer's entry).
NpyArray parse_npy(const std::vector<uint8_t>& bytes, const std::string& path);

}  // namespace data
}  // namespace ipsnet

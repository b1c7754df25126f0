#include "data/npy.h"

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/common/error.h"
#include "engine/common/files.h"

namespace ipsnet {
namespace data {

namespace {
size_t itemsize(const std::string& d) {
  if (d == "<i8" || d == "<f8") return 8;
  if (d == "<i4" || d == "<f4") return 4;
  if (d == "|u1" || d == "|i1" || d == "|b1") return 1;
  IPSNET_FAIL("unsupported .npy dtype '", d, "' (expected <i8, <i4, <f4, <f8 or |u1)");
}
}  // namespace

int64_t NpyArray::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

std::vector<int64_t> NpyArray::as_int64() const {
  int64_t n = numel();
  std::vector<int64_t> out(n);
  for (int64_t i = 0; i < n; ++i) {
    if (descr == "<i8") { int64_t v; std::memcpy(&v, &bytes[8 * i], 8); out[i] = v; }
    else if (descr == "<i4") { int32_t v; std::memcpy(&v, &bytes[4 * i], 4); out[i] = v; }
    else if (descr == "|u1" || descr == "|b1") out[i] = bytes[i];
    else if (descr == "|i1") out[i] = static_cast<int8_t>(bytes[i]);
    else IPSNET_FAIL(".npy array of dtype '", descr, "' where integers were expected");
  }
  return out;
}

std::vector<double> NpyArray::as_double() const {
  int64_t n = numel();
  std::vector<double> out(n);
  for (int64_t i = 0; i < n; ++i) {
    if (descr == "<f4") { float v; std::memcpy(&v, &bytes[4 * i], 4); out[i] = v; }
    else if (descr == "<f8") { double v; std::memcpy(&v, &bytes[8 * i], 8); out[i] = v; }
    else IPSNET_FAIL(".npy array of dtype '", descr, "' where floats were expected");
  }
  return out;
}

namespace {
// A shape as a Python tuple: (3,), (2, 4).
std::string shape_tuple(const std::vector<int64_t>& shape) {
  std::ostringstream sh;
  sh << "(";
  for (size_t i = 0; i < shape.size(); ++i) sh << shape[i] << (shape.size() == 1 ? "," : (i + 1 < shape.size() ? ", " : ""));
  sh << ")";
  return sh.str();
}
}  // namespace

std::string npy_header(const std::string& descr, const std::vector<int64_t>& shape) {
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape_tuple(shape) + ", }";
  size_t total = 10 + header.size() + 1;
  header += std::string((64 - total % 64) % 64, ' ') + "\n";
  std::string pre = "\x93NUMPY";
  pre += '\x01';
  pre += '\x00';
  pre += static_cast<char>(header.size() & 0xff);
  pre += static_cast<char>(header.size() >> 8);
  return pre + header;
}

void write_npy(const std::string& path, const std::string& descr, const std::vector<int64_t>& shape,
               const void* data, size_t bytes) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  IPSNET_CHECK(static_cast<size_t>(n) * itemsize(descr) == bytes, "write_npy '", path, "': ", bytes,
               " bytes for shape ", shape_tuple(shape), " of ", descr);
  AtomicFile f(path);
  f.write(npy_header(descr, shape));
  f.write(data, bytes);
  f.commit();
}

NpyArray read_npy(const std::string& path) {
  std::error_code ec;
  IPSNET_CHECK(!std::filesystem::is_directory(path, ec), "'", path, "' is a directory, not a .npy file");
  std::ifstream in(path, std::ios::binary);
  IPSNET_CHECK(in.good(), "cannot open '", path, "'");
  std::vector<uint8_t> all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse_npy(all, path);
}

NpyHeader parse_npy_header(const std::vector<uint8_t>& all, const std::string& path) {
  IPSNET_CHECK(all.size() >= 10 && all[0] == 0x93 && std::memcmp(&all[1], "NUMPY", 5) == 0, "'", path,
               "' is not a .npy file");
  size_t hlen, start;
  if (all[6] == 1) {
    hlen = all[8] | (all[9] << 8);
    start = 10;
  } else {
    IPSNET_CHECK(all[6] == 2 || all[6] == 3, "'", path, "': unsupported .npy version ", int(all[6]));
    IPSNET_CHECK(all.size() >= 12, "'", path, "' is truncated");
    hlen = all[8] | (all[9] << 8) | (size_t(all[10]) << 16) | (size_t(all[11]) << 24);
    start = 12;
  }
  IPSNET_CHECK(all.size() >= start && all.size() - start >= hlen, "'", path, "' is truncated (header)");
  std::string h(all.begin() + static_cast<std::ptrdiff_t>(start), all.begin() + static_cast<std::ptrdiff_t>(start + hlen));
  NpyHeader a;
  a.data_offset = start + hlen;
  size_t p = h.find("'descr':");
  IPSNET_CHECK(p != std::string::npos, "'", path, "': no descr in header");
  size_t q1 = h.find('\'', p + 8);
  size_t q2 = q1 == std::string::npos ? q1 : h.find('\'', q1 + 1);
  IPSNET_CHECK(q2 != std::string::npos, "'", path, "': the descr in the header is not a quoted string");
  a.descr = h.substr(q1 + 1, q2 - q1 - 1);
  IPSNET_CHECK(a.descr != "|O", "'", path, "' is a pickled object array; convert it with scripts/npy_convert.py");
  IPSNET_CHECK(h.find("'fortran_order': False") != std::string::npos, "'", path, "' is in Fortran order");
  try {
    a.itemsize = itemsize(a.descr);
  } catch (const Error&) {
    IPSNET_FAIL("'", path, "': unsupported .npy dtype '", a.descr, "' (expected <i8, <i4, <f4, <f8 or |u1)");
  }
  size_t s = h.find("'shape':");
  IPSNET_CHECK(s != std::string::npos, "'", path, "': no shape in header");
  size_t o = h.find('(', s);
  size_t c = o == std::string::npos ? o : h.find(')', o);
  IPSNET_CHECK(c != std::string::npos, "'", path, "': the shape in the header is not a tuple");
  std::string dims = h.substr(o + 1, c - o - 1);
  std::stringstream ss(dims);
  std::string tok;
  uint64_t numel = 1, nonzero = 1;
  while (std::getline(ss, tok, ',')) {
    if (tok.find_first_not_of(' ') == std::string::npos) continue;
    errno = 0;
    char* end = nullptr;
    long long d = std::strtoll(tok.c_str(), &end, 10);
    while (end && *end == ' ') ++end;
    IPSNET_CHECK(end && *end == '\0' && errno == 0 && d >= 0, "'", path, "': shape entry '", tok,
                 "' is not a non-negative integer");
    a.shape.push_back(d);
    // Bounded as int64 (NpyArray::numel), zero dimensions aside: a product of
    // the others beyond it is refused even when a zero makes the array empty.
    if (d != 0) {
      if (nonzero > static_cast<uint64_t>(INT64_MAX) / static_cast<uint64_t>(d)) a.overflow = true;
      else nonzero *= static_cast<uint64_t>(d);
    }
    numel = d == 0 ? 0 : numel * static_cast<uint64_t>(d);
  }
  a.numel = numel;
  return a;
}

NpyArray parse_npy(const std::vector<uint8_t>& all, const std::string& path) {
  const NpyHeader h = parse_npy_header(all, path);
  const size_t data_bytes = all.size() - h.data_offset, isz = h.itemsize;
  IPSNET_CHECK(!h.overflow && h.numel <= data_bytes / isz && h.numel * isz == data_bytes, "'", path, "' holds ",
               data_bytes, " data bytes, which does not match its shape of ",
               h.overflow ? "overflowing" : std::to_string(h.numel), " elements of ", isz, " bytes (truncated?)");
  NpyArray a;
  a.descr = h.descr;
  a.shape = h.shape;
  a.bytes.assign(all.begin() + static_cast<std::ptrdiff_t>(h.data_offset), all.end());
  return a;
}

}  // namespace data
}  // namespace ipsnet

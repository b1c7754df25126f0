#include "data/npy.h"

#include <cstring>
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

void write_npy(const std::string& path, const std::string& descr, const std::vector<int64_t>& shape,
               const void* data, size_t bytes) {
  std::ostringstream sh;
  sh << "(";
  for (size_t i = 0; i < shape.size(); ++i) sh << shape[i] << (shape.size() == 1 ? "," : (i + 1 < shape.size() ? ", " : ""));
  sh << ")";
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + sh.str() + ", }";
  size_t total = 10 + header.size() + 1;
  header += std::string((64 - total % 64) % 64, ' ') + "\n";
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  IPSNET_CHECK(static_cast<size_t>(n) * itemsize(descr) == bytes, "write_npy '", path, "': ", bytes,
               " bytes for shape ", sh.str(), " of ", descr);
  unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0};
  pre[8] = static_cast<unsigned char>(header.size() & 0xff);
  pre[9] = static_cast<unsigned char>(header.size() >> 8);
  AtomicFile f(path);
  f.write(pre, sizeof pre);
  f.write(header);
  f.write(data, bytes);
  f.commit();
}

NpyArray read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  IPSNET_CHECK(in.good(), "cannot open '", path, "'");
  std::vector<uint8_t> all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  IPSNET_CHECK(all.size() >= 10 && all[0] == 0x93 && std::memcmp(&all[1], "NUMPY", 5) == 0, "'", path,
               "' is not a .npy file");
  size_t hlen, start;
  if (all[6] == 1) {
    hlen = all[8] | (all[9] << 8);
    start = 10;
  } else {
    IPSNET_CHECK(all.size() >= 12, "'", path, "' is truncated");
    hlen = all[8] | (all[9] << 8) | (size_t(all[10]) << 16) | (size_t(all[11]) << 24);
    start = 12;
  }
  IPSNET_CHECK(all.size() >= start + hlen, "'", path, "' is truncated (header)");
  std::string h(all.begin() + start, all.begin() + start + hlen);
  NpyArray a;
  size_t p = h.find("'descr':");
  IPSNET_CHECK(p != std::string::npos, "'", path, "': no descr in header");
  size_t q1 = h.find('\'', p + 8), q2 = h.find('\'', q1 + 1);
  a.descr = h.substr(q1 + 1, q2 - q1 - 1);
  IPSNET_CHECK(a.descr != "|O", "'", path, "' is a pickled object array; convert it with scripts/npy_convert.py");
  IPSNET_CHECK(h.find("'fortran_order': False") != std::string::npos, "'", path, "' is in Fortran order");
  size_t s = h.find("'shape':");
  IPSNET_CHECK(s != std::string::npos, "'", path, "': no shape in header");
  size_t o = h.find('(', s), c = h.find(')', o);
  std::string dims = h.substr(o + 1, c - o - 1);
  std::stringstream ss(dims);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    if (tok.find_first_not_of(' ') == std::string::npos) continue;
    a.shape.push_back(std::stoll(tok));
  }
  size_t need = static_cast<size_t>(a.numel()) * itemsize(a.descr);
  IPSNET_CHECK(all.size() - start - hlen == need, "'", path, "' holds ", all.size() - start - hlen,
               " data bytes, expected ", need, " (truncated?)");
  a.bytes.assign(all.begin() + start + hlen, all.end());
  return a;
}

}  // namespace data
}  // namespace ipsnet

#include "data/traffic_signs.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "engine/common/error.h"

namespace ipsnet {
namespace data {

const char* const kStsAnnotationsMd5[2] = {"9106a905a86209c95dc9b51d12f520d6", "09debbc67f6cd89c1e2a2688ad1d03ca"};

const std::vector<std::string>& traffic_sign_classes() {
  static const std::vector<std::string> k = {"EMPTY", "50_SIGN", "70_SIGN", "80_SIGN"};
  return k;
}

namespace {

std::string strip(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}

// Python's float() of a stripped string: the whole text must be a number.
bool parse_float(const std::string& s, double* v) {
  const std::string t = strip(s);
  if (t.empty()) return false;
  errno = 0;
  char* end = nullptr;
  *v = std::strtod(t.c_str(), &end);
  return end == t.c_str() + t.size();
}

// The reference's _float: cut the last character until the rest parses.
bool parse_coordinate(std::string s, double* v) {
  while (!s.empty()) {
    if (parse_float(s, v)) return true;
    s.pop_back();
  }
  return false;
}

int visibility_index(const std::string& v) {
  static const char* kOrder[4] = {"VISIBLE", "BLURRED", "SIDE_ROAD", "OCCLUDED"};
  for (int k = 0; k < 4; ++k)
    if (v == kOrder[k]) return k;
  return -1;
}

}  // namespace

std::vector<TrafficImage> parse_sts_annotations(const std::string& text, const std::string& path) {
  std::vector<TrafficImage> out;
  std::istringstream in(text);
  std::string raw;
  int64_t line_no = 0;
  while (std::getline(in, raw)) {
    ++line_no;
    const std::string line = strip(raw);
    if (line.empty()) continue;
    const size_t colon = line.find(':');
    IPSNET_CHECK(colon != std::string::npos && colon > 0, "'", path, "' line ", line_no,
                 ": expected FILE:SIGN;SIGN;..., got '", line, "'");
    TrafficImage img;
    img.file = strip(line.substr(0, colon));
    img.line = line_no;
    std::string rest = line.substr(colon + 1);
    size_t s = 0;
    while (s <= rest.size()) {
      size_t e = rest.find(';', s);
      if (e == std::string::npos) e = rest.size();
      const std::string sign = strip(rest.substr(s, e - s));
      s = e + 1;
      if (sign.empty()) continue;
      std::vector<std::string> f;
      size_t a = 0;
      for (;;) {
        const size_t b = sign.find(',', a);
        f.push_back(sign.substr(a, b == std::string::npos ? std::string::npos : b - a));
        if (b == std::string::npos) break;
        a = b + 1;
      }
      if (strip(f[0]) == "MISC_SIGNS") continue;
      IPSNET_CHECK(f.size() >= 7, "'", path, "' line ", line_no, ": sign '", sign,
                   "' has ", f.size(), " fields, expected VISIBILITY, x1, y1, x2, y2, TYPE, NAME");
      TrafficSign t;
      t.visibility = strip(f[0]);
      IPSNET_CHECK(visibility_index(t.visibility) >= 0, "'", path, "' line ", line_no, ": unknown visibility '",
                   t.visibility, "' (VISIBLE, BLURRED, SIDE_ROAD, OCCLUDED)");
      double* coords[4] = {&t.x1, &t.y1, &t.x2, &t.y2};
      for (int k = 0; k < 4; ++k)
        IPSNET_CHECK(parse_coordinate(f[static_cast<size_t>(1 + k)], coords[k]), "'", path, "' line ", line_no,
                     ": coordinate '", strip(f[static_cast<size_t>(1 + k)]), "' of sign '", sign, "' is not a number");
      t.type = strip(f[5]);
      t.name = strip(f[6]);
      img.signs.push_back(t);
    }
    out.push_back(std::move(img));
  }
  return out;
}

int traffic_label(const TrafficImage& image) {
  if (image.signs.empty()) return 0;
  std::vector<TrafficSign> limits;
  for (const TrafficSign& s : image.signs)
    if (s.name == "50_SIGN" || s.name == "70_SIGN" || s.name == "80_SIGN") limits.push_back(s);
  if (limits.empty()) return -1;
  auto area = [](const TrafficSign& s) { return (s.x2 - s.x1) * (s.y2 - s.y1); };
  std::stable_sort(limits.begin(), limits.end(), [&](const TrafficSign& a, const TrafficSign& b) {
    const int va = visibility_index(a.visibility), vb = visibility_index(b.visibility);
    if (va != vb) return va < vb;
    return area(a) > area(b);
  });
  if (limits[0].visibility != "VISIBLE") return -1;
  const auto& c = traffic_sign_classes();
  return static_cast<int>(std::find(c.begin(), c.end(), limits[0].name) - c.begin());
}

std::string sts_set_for(const std::string& split, int64_t seed) {
  IPSNET_CHECK(split == "train" || split == "test", "split train or test, got '", split, "'");
  const int64_t t = split == "train" ? 1 : 0;
  const int64_t k = ((seed + 1 + t) % 2 + 2) % 2;
  return "Set" + std::to_string(1 + k);
}

// ---- MD5 (RFC 1321) ------------------------------------------------------------

std::string md5_hex(const std::string& bytes) {
  static const uint32_t K[64] = {
      0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
      0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
      0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
      0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
      0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
      0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
      0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
      0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391};
  static const int R[64] = {7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9,  14, 20, 5, 9,
                            14, 20, 5, 9,  14, 20, 5, 9,  14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
                            4, 11, 16, 23, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21};
  uint32_t h[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};
  std::string msg = bytes;
  const uint64_t bits = static_cast<uint64_t>(bytes.size()) * 8;
  msg += static_cast<char>(0x80);
  while (msg.size() % 64 != 56) msg += '\0';
  for (int k = 0; k < 8; ++k) msg += static_cast<char>((bits >> (8 * k)) & 0xff);
  for (size_t off = 0; off < msg.size(); off += 64) {
    uint32_t w[16];
    for (int k = 0; k < 16; ++k) {
      const unsigned char* p = reinterpret_cast<const unsigned char*>(msg.data() + off + 4 * k);
      w[k] = p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<uint32_t>(p[3]) << 24);
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
    for (int i = 0; i < 64; ++i) {
      uint32_t f;
      int g;
      if (i < 16) {
        f = (b & c) | (~b & d);
        g = i;
      } else if (i < 32) {
        f = (d & b) | (~d & c);
        g = (5 * i + 1) % 16;
      } else if (i < 48) {
        f = b ^ c ^ d;
        g = (3 * i + 5) % 16;
      } else {
        f = c ^ (b | ~d);
        g = (7 * i) % 16;
      }
      const uint32_t t = d;
      d = c;
      c = b;
      const uint32_t x = a + f + K[i] + w[g];
      b = b + ((x << R[i]) | (x >> (32 - R[i])));
      a = t;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d;
  }
  char out[33];
  for (int k = 0; k < 16; ++k) std::snprintf(out + 2 * k, 3, "%02x", (h[k / 4] >> (8 * (k % 4))) & 0xff);
  return std::string(out, 32);
}

}  // namespace data
}  // namespace ipsnet

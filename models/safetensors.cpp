#include "models/safetensors.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>

#include "engine/common/files.h"
#include "engine/common/json_writer.h"

namespace ipsnet {
namespace safetensors {

namespace {

// ---- a minimal JSON value and parser (objects, arrays, strings, integers) ----

struct Json {
  enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
  bool b = false;
  double num = 0;
  bool is_int = false;
  int64_t i = 0;
  std::string str;
  std::vector<Json> arr;
  std::vector<std::pair<std::string, Json>> obj;
};

class Parser {
 public:
  Parser(const std::string& s, const std::string& what) : s_(s), what_(what) {}

  Json parse_document() {
    Json v = value(0);
    ws();
    if (p_ != s_.size()) fail("trailing characters after the JSON header");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& msg) {
    IPSNET_FAIL("safetensors: ", what_, ": malformed header JSON at byte ", p_, ": ", msg);
  }
  void ws() {
    while (p_ < s_.size() && (s_[p_] == ' ' || s_[p_] == '\n' || s_[p_] == '\r' || s_[p_] == '\t')) ++p_;
  }
  char peek() {
    ws();
    if (p_ >= s_.size()) fail("unexpected end");
    return s_[p_];
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++p_;
  }
  Json value(int depth) {
    if (depth > 64) fail("nesting too deep");
    char c = peek();
    Json v;
    if (c == '{') {
      v.kind = Json::Object;
      ++p_;
      if (peek() == '}') {
        ++p_;
        return v;
      }
      for (;;) {
        if (peek() != '"') fail("expected a key string");
        std::string k = string();
        expect(':');
        v.obj.emplace_back(k, value(depth + 1));
        char d = peek();
        ++p_;
        if (d == '}') break;
        if (d != ',') fail("expected ',' or '}'");
      }
    } else if (c == '[') {
      v.kind = Json::Array;
      ++p_;
      if (peek() == ']') {
        ++p_;
        return v;
      }
      for (;;) {
        v.arr.push_back(value(depth + 1));
        char d = peek();
        ++p_;
        if (d == ']') break;
        if (d != ',') fail("expected ',' or ']'");
      }
    } else if (c == '"') {
      v.kind = Json::String;
      v.str = string();
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      v.kind = Json::Number;
      size_t start = p_;
      if (s_[p_] == '-') ++p_;
      bool frac = false;
      while (p_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[p_])) || s_[p_] == '.' ||
                                s_[p_] == 'e' || s_[p_] == 'E' || s_[p_] == '+' || s_[p_] == '-')) {
        if (!std::isdigit(static_cast<unsigned char>(s_[p_]))) frac = true;
        ++p_;
      }
      std::string tok = s_.substr(start, p_ - start);
      if (!frac) {
        errno = 0;
        long long ll = std::strtoll(tok.c_str(), nullptr, 10);
        if (errno == ERANGE) fail("integer out of range: " + tok);
        v.is_int = true;
        v.i = ll;
        v.num = static_cast<double>(ll);
      } else {
        v.num = std::strtod(tok.c_str(), nullptr);
      }
    } else if (s_.compare(p_, 4, "true") == 0) {
      v.kind = Json::Bool;
      v.b = true;
      p_ += 4;
    } else if (s_.compare(p_, 5, "false") == 0) {
      v.kind = Json::Bool;
      p_ += 5;
    } else if (s_.compare(p_, 4, "null") == 0) {
      p_ += 4;
    } else {
      fail(std::string("unexpected character '") + c + "'");
    }
    return v;
  }
  static void put_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  uint32_t hex4() {
    if (p_ + 4 > s_.size()) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      char h = s_[p_++];
      v <<= 4;
      if (h >= '0' && h <= '9') v |= static_cast<uint32_t>(h - '0');
      else if (h >= 'a' && h <= 'f') v |= static_cast<uint32_t>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') v |= static_cast<uint32_t>(h - 'A' + 10);
      else fail("bad \\u escape");
    }
    return v;
  }
  std::string string() {
    expect('"');
    std::string out;
    for (;;) {
      if (p_ >= s_.size()) fail("unterminated string");
      char c = s_[p_++];
      if (c == '"') break;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (p_ >= s_.size()) fail("unterminated escape");
      char e = s_[p_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && p_ + 1 < s_.size() && s_[p_] == '\\' && s_[p_ + 1] == 'u') {
            p_ += 2;
            uint32_t lo = hex4();
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          put_utf8(out, cp);
          break;
        }
        default: fail(std::string("bad escape '\\") + e + "'");
      }
    }
    return out;
  }
  const std::string& s_;
  std::string what_;
  size_t p_ = 0;
};

const char* st_dtype(DType t) {
  switch (t) {
    case DType::Float32: return "F32";
    case DType::Float64: return "F64";
    case DType::Int64: return "I64";
    case DType::BFloat16: return "BF16";
  }
  return "?";
}

bool parse_dtype(const std::string& s, DType* t) {
  if (s == "F32") *t = DType::Float32;
  else if (s == "F64") *t = DType::Float64;
  else if (s == "I64") *t = DType::Int64;
  else return false;
  return true;
}

uint64_t read_le64(const unsigned char* p) {
  uint64_t v = 0;
  for (int k = 7; k >= 0; --k) v = (v << 8) | p[k];
  return v;
}

void put_le64(std::string& out, uint64_t v) {
  for (int k = 0; k < 8; ++k) out += static_cast<char>((v >> (8 * k)) & 0xFF);
}

// Checksums written into __metadata__: "crc32:NAME" per tensor (its data
// bytes) and "crc32:__metadata__" over the other metadata entries. Files
// without them (PyTorch's) load unchecked.
const std::string kCrcPrefix = "crc32:";
const std::string kMetaCrc = "crc32:__metadata__";

uint32_t crc_of(const void* p, size_t n) {
  uLong c = ::crc32(0L, Z_NULL, 0);
  const Bytef* b = static_cast<const Bytef*>(p);
  while (n > 0) {
    uInt chunk = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    c = ::crc32(c, b, chunk);
    b += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(c);
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%08x", v);
  return buf;
}

uint32_t metadata_crc(const std::map<std::string, std::string>& m) {
  std::string all;
  for (const auto& kv : m) {
    if (kv.first.rfind(kCrcPrefix, 0) == 0) continue;
    all += kv.first;
    all += '\0';
    all += kv.second;
    all += '\0';
  }
  return crc_of(all.data(), all.size());
}

const Json* find(const Json& o, const char* key) {
  for (const auto& kv : o.obj)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

}  // namespace

// ---- parse ----------------------------------------------------------------------

File deserialize(const std::string& bytes, const std::string& what) {
  auto fail = [&](const std::string& msg) { IPSNET_FAIL("safetensors: ", what, ": ", msg); };
  if (bytes.size() < 8)
    fail(str_cat("file is ", bytes.size(), " bytes, too short for the 8-byte header length (truncated?)"));
  uint64_t n = read_le64(reinterpret_cast<const unsigned char*>(bytes.data()));
  if (n > bytes.size() - 8)
    fail(str_cat("header length ", n, " exceeds the ", bytes.size() - 8,
                 " bytes after the length field (truncated or not a safetensors file)"));
  const std::string header = bytes.substr(8, static_cast<size_t>(n));
  const size_t data_size = bytes.size() - 8 - static_cast<size_t>(n);
  const char* data = bytes.data() + 8 + n;
  Json root = Parser(header, what).parse_document();
  if (root.kind != Json::Object) fail("header is not a JSON object");

  File file;
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  for (const auto& kv : root.obj) {
    const std::string& name = kv.first;
    const Json& v = kv.second;
    if (name == "__metadata__") {
      if (v.kind != Json::Object) fail("__metadata__ is not an object");
      for (const auto& m : v.obj) {
        if (m.second.kind != Json::String) fail(str_cat("__metadata__ value of '", m.first, "' is not a string"));
        file.metadata[m.first] = m.second.str;
      }
      continue;
    }
    if (v.kind != Json::Object) fail(str_cat("tensor '", name, "': entry is not an object"));
    const Json* dt = find(v, "dtype");
    const Json* sh = find(v, "shape");
    const Json* off = find(v, "data_offsets");
    if (!dt || dt->kind != Json::String) fail(str_cat("tensor '", name, "': missing or non-string dtype"));
    if (!sh || sh->kind != Json::Array) fail(str_cat("tensor '", name, "': missing shape"));
    if (!off || off->kind != Json::Array || off->arr.size() != 2)
      fail(str_cat("tensor '", name, "': data_offsets must be [begin, end]"));
    Entry e;
    e.name = name;
    if (!parse_dtype(dt->str, &e.dtype))
      fail(str_cat("tensor '", name, "': dtype ", dt->str, " is not supported (ipsnet reads F32, F64, I64)"));
    uint64_t numel = 1;
    for (const Json& d : sh->arr) {
      if (d.kind != Json::Number || !d.is_int || d.i < 0)
        fail(str_cat("tensor '", name, "': shape entries must be non-negative integers"));
      e.shape.push_back(d.i);
      if (d.i != 0 && numel > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d.i))
        fail(str_cat("tensor '", name, "': shape overflows"));
      numel *= static_cast<uint64_t>(d.i);
    }
    for (const Json& o : off->arr)
      if (o.kind != Json::Number || !o.is_int || o.i < 0)
        fail(str_cat("tensor '", name, "': data_offsets must be non-negative integers"));
    e.begin = static_cast<uint64_t>(off->arr[0].i);
    e.end = static_cast<uint64_t>(off->arr[1].i);
    if (e.end < e.begin) fail(str_cat("tensor '", name, "': data_offsets [", e.begin, ", ", e.end, "] are reversed"));
    if (numel > std::numeric_limits<uint64_t>::max() / dtype_size(e.dtype))
      fail(str_cat("tensor '", name, "': shape overflows"));
    uint64_t need = numel * dtype_size(e.dtype);
    if (e.end - e.begin != need)
      fail(str_cat("tensor '", name, "': data_offsets [", e.begin, ", ", e.end, "] span ", e.end - e.begin,
                   " bytes but ", dt->str, " ", shape_str(e.shape), " needs ", need));
    if (e.end > data_size)
      fail(str_cat("tensor '", name, "': data ends at byte ", e.end, " but the data section has only ", data_size,
                   " bytes (truncated file)"));
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  uint64_t pos = 0;
  for (const Entry& e : entries) {
    if (e.begin != pos && !(e.begin == e.end && e.begin <= pos))
      fail(str_cat("tensor '", e.name, "': data starts at byte ", e.begin, ", expected ", pos,
                   " (overlapping or non-contiguous tensors)"));
    pos = std::max(pos, e.end);
  }
  if (pos != data_size)
    fail(str_cat("data section has ", data_size, " bytes but the tensors cover ", pos));
  auto meta_it = file.metadata.find(kMetaCrc);
  if (meta_it != file.metadata.end() && meta_it->second != hex32(metadata_crc(file.metadata)))
    fail(str_cat("the metadata fail their CRC-32 check (stored ", meta_it->second, ", computed ",
                 hex32(metadata_crc(file.metadata)), "): the file is corrupt"));
  for (const Entry& e : entries) {
    auto crc_it = file.metadata.find(kCrcPrefix + e.name);
    if (crc_it != file.metadata.end()) {
      const std::string got = hex32(crc_of(data + e.begin, static_cast<size_t>(e.end - e.begin)));
      if (got != crc_it->second)
        fail(str_cat("tensor '", e.name, "' fails its CRC-32 check (stored ", crc_it->second, ", computed ", got,
                     "): the file is corrupt"));
    }
  }
  for (auto it = file.metadata.begin(); it != file.metadata.end();)
    it = it->first.rfind(kCrcPrefix, 0) == 0 ? file.metadata.erase(it) : std::next(it);
  for (const Entry& e : entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype);
    if (e.end > e.begin) std::memcpy(t.raw_data(), data + e.begin, static_cast<size_t>(e.end - e.begin));
    file.tensors.insert(e.name, t);
  }
  return file;
}

File load(const std::string& path) {
  std::error_code ec;
  IPSNET_CHECK(!std::filesystem::is_directory(path, ec), "safetensors: ", path,
               ": is a directory, not a safetensors file");
  IPSNET_CHECK(std::filesystem::exists(path, ec), "safetensors: ", path, ": cannot open (no such file)");
  std::ifstream in(path, std::ios::binary);
  IPSNET_CHECK(in.good(), "safetensors: ", path, ": cannot open (", std::strerror(errno), ")");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  IPSNET_CHECK(!in.bad(), "safetensors: ", path, ": read error");
  return deserialize(bytes, path);
}

TensorDict load_tensors(const std::string& path) { return load(path).tensors; }

// ---- write ----------------------------------------------------------------------

std::string serialize(const TensorDict& tensors, const std::map<std::string, std::string>& metadata_in) {
  std::vector<Tensor> host;
  std::map<std::string, std::string> metadata;
  for (const auto& kv : metadata_in)
    if (kv.first.rfind(kCrcPrefix, 0) != 0) metadata.insert(kv);
  for (const auto& it : tensors) {
    IPSNET_CHECK(it.first != "__metadata__", "safetensors: a tensor cannot be named __metadata__");
    check_defined(it.second, "safetensors::save", it.first.c_str());
    Tensor t = it.second.detach().to(Device::cpu()).contiguous();
    host.push_back(t);
  }
  // Every tensor's bytes and the metadata get a CRC-32 (checked by deserialize).
  {
    size_t k = 0;
    for (const auto& it : tensors) {
      const Tensor& t = host[k++];
      metadata[kCrcPrefix + it.first] = hex32(crc_of(t.raw_data(), t.nbytes()));
    }
    metadata[kMetaCrc] = hex32(metadata_crc(metadata));
  }
  JsonWriter h;  // compact
  h.begin_object();
  if (!metadata.empty()) {
    h.key("__metadata__").begin_object();
    for (const auto& kv : metadata) h.member(kv.first, kv.second);
    h.end_object();
  }
  uint64_t off = 0;
  size_t k = 0;
  for (const auto& it : tensors) {
    const Tensor& t = host[k++];
    h.key(it.first).begin_object().member("dtype", st_dtype(t.dtype())).key("shape").begin_array();
    for (size_t d = 0; d < t.shape().size(); ++d) h.value(t.shape()[d]);
    uint64_t nb = t.nbytes();
    h.end_array().key("data_offsets").begin_array().value(off).value(off + nb).end_array().end_object();
    off += nb;
  }
  h.end_object();
  std::string header = h.str();
  while ((8 + header.size()) % 8 != 0) header += ' ';  // align the data section to 8 bytes
  std::string out;
  out.reserve(8 + header.size() + off);
  put_le64(out, header.size());
  out += header;
  for (const Tensor& t : host) out.append(static_cast<const char*>(t.raw_data()), t.nbytes());
  return out;
}

void save(const std::string& path, const TensorDict& tensors, const std::map<std::string, std::string>& metadata) {
  const std::string bytes = serialize(tensors, metadata);
  try {
    write_file_atomic(path, bytes);  // its message names the file and the reason
  } catch (const Error& e) {
    throw Error(std::string("safetensors: ") + e.what());
  }
}

}  // namespace safetensors
}  // namespace ipsnet

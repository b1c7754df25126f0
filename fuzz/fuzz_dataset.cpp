// libFuzzer harness: the dataset reader (data/dataset.cpp): the split's index
// (SPLIT.ipsx) and records (SPLIT.ipsd). Input: a 4-byte little-endian index
// length, the index bytes, the data bytes. The harness recomputes the header,
// index and record CRC-32s so that mutations reach the parsing behind them,
// writes both files to a scratch directory and reads every image.
#include <unistd.h>
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "engine/common/error.h"

namespace {

uint32_t crc(const uint8_t* p, size_t n) { return static_cast<uint32_t>(::crc32(::crc32(0L, Z_NULL, 0), p, n)); }
void put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
uint64_t get64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

const std::string& scratch() {
  static std::string dir = [] {
    char tmpl[] = "/tmp/ipsnet_fuzz_dataset_XXXXXX";
    return std::string(::mkdtemp(tmpl));
  }();
  return dir;
}

void write(const std::string& path, const std::vector<uint8_t>& b) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (!b.empty() && std::fwrite(b.data(), 1, b.size(), f) != b.size()) std::abort();
  std::fclose(f);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4 || size > (1u << 20)) return 0;
  uint32_t ilen;
  std::memcpy(&ilen, data, 4);
  if (ilen > size - 4) return 0;
  std::vector<uint8_t> index(data + 4, data + 4 + ilen), records(data + 4 + ilen, data + size);
  constexpr size_t kHeader = 64, kEntry = 128;
  if (records.size() >= kHeader) put32(records.data() + 60, crc(records.data(), 60));
  if (index.size() >= kHeader) {
    for (size_t e = kHeader; e + kEntry <= index.size(); e += kEntry) {
      uint64_t off = get64(&index[e]), bytes = get64(&index[e + 8]);
      if (off <= records.size() && bytes <= records.size() - off) put32(&index[e + 16], crc(records.data() + off, bytes));
    }
    if (records.size() >= kHeader) std::memcpy(&index[28], &records[60], 4);
    const size_t entries = (index.size() - kHeader) / kEntry * kEntry;
    put32(&index[24], crc(index.data() + kHeader, entries));
    put32(&index[60], crc(index.data(), 60));
  }
  write(scratch() + "/train.ipsd", records);
  write(scratch() + "/train.ipsx", index);
  try {
    ipsnet::data::DatasetReader r = ipsnet::data::DatasetReader::open(scratch(), "train");
    for (int64_t i = 0; i < r.size(); ++i) {
      r.verify(i);
      (void)r.meta(i);
      ipsnet::data::SparseImage s = r.read_sparse(i);
      if (r.height() * r.width() <= (1 << 20)) {
        std::vector<float> img(static_cast<size_t>(r.height() * r.width()));
        r.read_image(i, img.data());
        std::vector<float> crop(16 * 16);
        r.read_region(i, r.height() / 2 - 8, r.width() / 2 - 8, 16, 16, crop.data());
        (void)r.region_is_zero(i, 0, 0, 16, 16);
      }
      if (r.has_lowres() && r.lowres_height() * r.lowres_width() <= (1 << 20)) {
        std::vector<float> low(static_cast<size_t>(r.lowres_height() * r.lowres_width()));
        r.read_lowres(i, low.data());
      }
    }
  } catch (const ipsnet::Error&) {
  }
  return 0;
}

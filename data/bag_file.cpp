// ipsnet's feature bag file (data/bag_file.h).
#include "data/bag_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <cstring>

#include "engine/common/error.h"
#include "engine/common/files.h"

namespace ipsnet {
namespace data {

namespace {
constexpr char kBagMagic[8] = {'I', 'P', 'S', 'N', 'B', 'A', 'G', '1'};
constexpr uint32_t kBagVersion = 1;
constexpr size_t kBagHeader = 128;
constexpr uint64_t kMaxDim = uint64_t(1) << 40;

uint64_t align64(uint64_t v) { return (v + 63) & ~uint64_t(63); }
}  // namespace

void write_bag(const std::string& path, const BagInfo& info, const float* features, const int64_t* coords) {
  IPSNET_CHECK(info.n >= 0 && info.F >= 1, "write_bag: bad shape (", info.n, ", ", info.F, ")");
  const uint64_t fbytes = static_cast<uint64_t>(info.n * info.F) * sizeof(float);
  const uint64_t cbytes = static_cast<uint64_t>(info.n) * 2 * sizeof(int64_t);
  const uint64_t foff = align64(kBagHeader + info.name.size() + info.split.size());
  const uint64_t coff = foff + fbytes;
  const uint64_t size = coff + cbytes;
  std::vector<uint8_t> head(foff, 0);
  std::copy_n(kBagMagic, 8, head.data());
  put<uint32_t>(head.data(), 8, kBagVersion);
  put<int64_t>(head.data(), 16, info.n);
  put<int64_t>(head.data(), 24, info.F);
  put<int64_t>(head.data(), 32, info.label);
  put<int32_t>(head.data(), 40, info.level);
  put<double>(head.data(), 48, info.extent0);
  put<int64_t>(head.data(), 56, info.read_size);
  put<int64_t>(head.data(), 64, info.out_size);
  put<uint64_t>(head.data(), 72, foff);
  put<uint64_t>(head.data(), 80, coff);
  put<uint64_t>(head.data(), 88, size);
  put<uint32_t>(head.data(), 96, static_cast<uint32_t>(info.name.size()));
  put<uint32_t>(head.data(), 100, static_cast<uint32_t>(info.split.size()));
  put<uint32_t>(head.data(), 104, crc32_of(features, fbytes));
  put<uint32_t>(head.data(), 108, crc32_of(coords, cbytes));
  std::memcpy(head.data() + kBagHeader, info.name.data(), info.name.size());
  std::memcpy(head.data() + kBagHeader + info.name.size(), info.split.data(), info.split.size());
  // The header's checksum covers the header (this field zero) and the names.
  put<uint32_t>(head.data(), 124, crc32_of(head.data(), head.size()));
  AtomicFile f(path);
  f.write(head.data(), head.size());
  f.write(features, fbytes);
  f.write(coords, cbytes);
  f.commit();
}

BagReader BagReader::open(const std::string& path) {
  BagReader r;
  r.path_ = path;
  r.map_ = MappedFile::map(path);
  const uint8_t* p = r.map_->ptr;
  const size_t size = r.map_->size;
  IPSNET_CHECK(size >= 8 && std::memcmp(p, kBagMagic, 8) == 0, "'", path,
               "' is not an ipsnet feature bag (`ipsnet extract-features` writes them)");
  IPSNET_CHECK(size >= kBagHeader, "the bag '", path, "' is truncated: ", size, " bytes, shorter than its header");
  IPSNET_CHECK(get<uint32_t>(p, 8) == kBagVersion, "the bag '", path, "' has version ", get<uint32_t>(p, 8),
               ", expected ", kBagVersion);
  BagInfo& in = r.info_;
  in.n = get<int64_t>(p, 16);
  in.F = get<int64_t>(p, 24);
  in.label = get<int64_t>(p, 32);
  in.level = get<int32_t>(p, 40);
  in.extent0 = get<double>(p, 48);
  in.read_size = get<int64_t>(p, 56);
  in.out_size = get<int64_t>(p, 64);
  const uint64_t foff = get<uint64_t>(p, 72), coff = get<uint64_t>(p, 80), want = get<uint64_t>(p, 88);
  const uint32_t ln = get<uint32_t>(p, 96), ls = get<uint32_t>(p, 100);
  IPSNET_CHECK(want == size, "the bag '", path, "' is truncated or damaged: ", size, " bytes, its header says ", want);
  IPSNET_CHECK(in.n >= 0 && static_cast<uint64_t>(in.n) < kMaxDim && in.F >= 1 && static_cast<uint64_t>(in.F) < kMaxDim &&
                   kBagHeader + ln + ls <= foff && foff % 64 == 0 &&
                   coff == foff + static_cast<uint64_t>(in.n * in.F) * sizeof(float) &&
                   size == coff + static_cast<uint64_t>(in.n) * 16,
               "the bag '", path, "' has an inconsistent header (damaged)");
  std::vector<uint8_t> head(p, p + foff);
  const uint32_t hcrc = get<uint32_t>(head.data(), 124);
  put<uint32_t>(head.data(), 124, 0);
  IPSNET_CHECK(crc32_of(head.data(), head.size()) == hcrc, "the bag '", path, "' fails its header checksum (damaged)");
  in.name.assign(reinterpret_cast<const char*>(p + kBagHeader), ln);
  in.split.assign(reinterpret_cast<const char*>(p + kBagHeader + ln), ls);
  r.features_ = reinterpret_cast<const float*>(p + foff);
  r.features_offset_ = foff;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  IPSNET_CHECK(fd >= 0, "cannot open the bag '", path, "': ", std::strerror(errno));
  r.fd_ = std::shared_ptr<int>(new int(fd), [](int* f) {
    ::close(*f);
    delete f;
  });
  r.coords_ = reinterpret_cast<const int64_t*>(p + coff);
  r.features_crc_ = get<uint32_t>(p, 104);
  r.coords_crc_ = get<uint32_t>(p, 108);
  return r;
}

namespace {
const size_t kPage = static_cast<size_t>(sysconf(_SC_PAGESIZE));
}  // namespace

void BagReader::pread_all(void* dst, size_t n, uint64_t offset) const {
  uint8_t* d = static_cast<uint8_t*>(dst);
  while (n > 0) {
    ssize_t r = ::pread(*fd_, d, n, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    IPSNET_CHECK(r > 0, "cannot read the bag '", path_, "' at byte ", offset, ": ",
                 r < 0 ? std::strerror(errno) : "unexpected end of file");
    d += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
}

void BagReader::read_rows(const int64_t* idx, int64_t n, float* dst) const {
  const int64_t N = info_.n, F = info_.F;
  const size_t row = static_cast<size_t>(F) * sizeof(float);
  for (int64_t k = 0; k < n; ++k)
    IPSNET_CHECK(idx[k] >= 0 && idx[k] < N, "instance ", idx[k], " of the bag '", path_, "' is outside [0, ", N, ")");
  if (row < kPage) {  // narrow bags are small: copy from the mapping
    for (int64_t k = 0; k < n; ++k) std::memcpy(dst + k * F, row_ptr(idx[k]), row);
    return;
  }
  // Runs of consecutive rows in one read each.
  for (int64_t k = 0; k < n;) {
    int64_t e = k + 1;
    while (e < n && idx[e] == idx[e - 1] + 1) ++e;
    pread_all(dst + k * F, row * static_cast<size_t>(e - k), features_offset_ + static_cast<uint64_t>(idx[k]) * row);
    k = e;
  }
}

void BagReader::verify() const {
  const size_t total = static_cast<size_t>(info_.n * info_.F) * sizeof(float), chunk = size_t(64) << 20;
  uint32_t crc = 0;
  std::vector<uint8_t> buf(std::min(chunk, total));
  for (size_t off = 0; off < total; off += chunk) {
    const size_t m = std::min(chunk, total - off);
    pread_all(buf.data(), m, features_offset_ + off);
    crc = crc32_of(buf.data(), m, crc);
  }
  IPSNET_CHECK(crc == features_crc_, "the bag '", path_, "' fails its feature checksum (damaged)");
  IPSNET_CHECK(crc32_of(coords_, static_cast<size_t>(info_.n) * 16) == coords_crc_, "the bag '", path_,
               "' fails its coordinate checksum (damaged)");
}

}  // namespace data
}  // namespace ipsnet

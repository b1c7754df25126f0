#include "data/dataset.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cmath>
#include <cstring>

#include "data/binary_file.h"
#include "engine/common/error.h"

namespace ipsnet {
namespace data {

namespace {

constexpr char kDataMagic[8] = {'I', 'P', 'S', 'N', 'D', 'A', 'T', 'A'};
constexpr char kIndexMagic[8] = {'I', 'P', 'S', 'N', 'I', 'D', 'X', '1'};
constexpr size_t kHeaderBytes = 64;
constexpr size_t kEntryBytes = 128;


int style_code(const std::string& s) {
  if (s == "ats") return 0;
  if (s == "ips") return 1;
  if (s == "pineneedle") return 2;
  if (s == "mnist") return 3;
  IPSNET_FAIL("dataset style must be ats, ips, pineneedle or mnist, got '", s, "'");
}
std::string style_name(uint32_t c) {
  static const char* names[] = {"ats", "ips", "pineneedle", "mnist"};
  IPSNET_CHECK(c < 4, "dataset header has style code ", c,
               ", expected 0 (ats), 1 (ips), 2 (pineneedle) or 3 (mnist)");
  return names[c];
}

int64_t groups_of(int64_t h) { return (h + kRowGroup - 1) / kRowGroup; }
int64_t align_up(int64_t v, int64_t a) { return (v + a - 1) / a * a; }

// Byte size of one view with nnz nonzeros, 4-byte aligned.
int64_t view_bytes(int64_t h, int64_t nnz) {
  return 4 * (groups_of(h) + 1) + 4 * nnz + align_up(2 * (h + nnz), 4);
}

// Data header: magic[8] u32 version u32 header_bytes i64 n, height, width,
// low_h, low_w u32 style u32 crc(bytes 0..59).
void encode_data_header(uint8_t* h, const SplitHeader& s) {
  std::memset(h, 0, kHeaderBytes);
  std::memcpy(h, kDataMagic, 8);
  put<uint32_t>(h, 8, kDatasetVersion);
  put<uint32_t>(h, 12, kHeaderBytes);
  put<int64_t>(h, 16, s.n);
  put<int64_t>(h, 24, s.height);
  put<int64_t>(h, 32, s.width);
  put<int64_t>(h, 40, s.lowres_height);
  put<int64_t>(h, 48, s.lowres_width);
  put<uint32_t>(h, 56, static_cast<uint32_t>(style_code(s.style)));
  put<uint32_t>(h, 60, crc32_of(h, 60));
}

// Index header: magic[8] u32 version u32 entry_bytes i64 n u32 entries_crc
// u32 data_header_crc ... u32 crc(bytes 0..59) at 60.
void encode_index_header(uint8_t* h, int64_t n, uint32_t entries_crc, uint32_t data_header_crc) {
  std::memset(h, 0, kHeaderBytes);
  std::memcpy(h, kIndexMagic, 8);
  put<uint32_t>(h, 8, kDatasetVersion);
  put<uint32_t>(h, 12, kEntryBytes);
  put<int64_t>(h, 16, n);
  put<uint32_t>(h, 24, entries_crc);
  put<uint32_t>(h, 28, data_header_crc);
  put<uint32_t>(h, 60, crc32_of(h, 60));
}

}  // namespace

// ---- SparseImage -----------------------------------------------------------

SparseImage SparseImage::from_dense(const float* dense, int64_t height, int64_t width) {
  IPSNET_CHECK(width <= kMaxCanvasSide && height <= kMaxCanvasSide, "image ", height, "x", width,
               " exceeds the format's limit of ", kMaxCanvasSide, " per side");
  SparseImage s;
  s.height = height;
  s.width = width;
  s.row_counts.assign(height, 0);
  for (int64_t r = 0; r < height; ++r) {
    const float* row = dense + r * width;
    uint16_t cnt = 0;
    for (int64_t c = 0; c < width; ++c) {
      if (row[c] != 0.0f) {
        s.cols.push_back(static_cast<uint16_t>(c));
        s.vals.push_back(row[c]);
        ++cnt;
      }
    }
    s.row_counts[r] = cnt;
  }
  return s;
}

void SparseImage::to_dense(float* dst) const {
  std::fill(dst, dst + height * width, 0.0f);
  int64_t k = 0;
  for (int64_t r = 0; r < height; ++r)
    for (int64_t j = 0; j < row_counts[r]; ++j, ++k) dst[r * width + cols[k]] = vals[k];
}

// ---- records ---------------------------------------------------------------

namespace {
void encode_view(const SparseImage& v, uint8_t* p) {
  int64_t g = groups_of(v.height);
  int64_t nnz = v.nnz();
  IPSNET_CHECK(static_cast<int64_t>(v.row_counts.size()) == v.height && static_cast<int64_t>(v.cols.size()) == nnz,
               "sparse image has ", v.row_counts.size(), " row counts and ", v.cols.size(), " columns, expected ",
               v.height, " and ", nnz);
  IPSNET_CHECK(nnz <= 0xffffffffLL, "image has ", nnz, " nonzeros, more than the format's u32 limit");
  uint32_t* go = reinterpret_cast<uint32_t*>(p);
  uint32_t acc = 0;
  for (int64_t r = 0; r < v.height; ++r) {
    if (r % kRowGroup == 0) go[r / kRowGroup] = acc;
    acc += v.row_counts[r];
  }
  IPSNET_CHECK(acc == static_cast<uint64_t>(nnz), "sparse image row counts sum to ", acc, ", expected nnz ", nnz);
  go[g] = acc;
  uint8_t* q = p + 4 * (g + 1);
  std::memcpy(q, v.vals.data(), 4 * nnz);
  q += 4 * nnz;
  std::memcpy(q, v.row_counts.data(), 2 * v.height);
  q += 2 * v.height;
  std::memcpy(q, v.cols.data(), 2 * nnz);
}
}  // namespace

std::vector<uint8_t> encode_record(const SparseImage& high, const SparseImage* low) {
  int64_t n = view_bytes(high.height, high.nnz());
  int64_t nl = low ? view_bytes(low->height, low->nnz()) : 0;
  std::vector<uint8_t> rec(align_up(n + nl, 8), 0);
  encode_view(high, rec.data());
  if (low) encode_view(*low, rec.data() + n);
  return rec;
}

// ---- writer ----------------------------------------------------------------

DatasetWriter::DatasetWriter(const std::string& dir, const std::string& split, const SplitHeader& header)
    : data_path_(dir + "/" + split + ".ipsd"), index_path_(dir + "/" + split + ".ipsx"), header_(header) {
  style_code(header.style);
  IPSNET_CHECK(header.height > 0 && header.width > 0 && header.height <= kMaxCanvasSide &&
                   header.width <= kMaxCanvasSide,
               "canvas ", header.height, "x", header.width, " must be within 1..", kMaxCanvasSide, " per side");
  data_ = std::fopen(data_path_.c_str(), "wb");
  IPSNET_CHECK(data_ != nullptr, "cannot create '", data_path_, "': ", std::strerror(errno));
  index_ = std::fopen(index_path_.c_str(), "wb");
  if (!index_) {
    int e = errno;
    std::fclose(static_cast<FILE*>(data_));
    data_ = nullptr;
    IPSNET_FAIL("cannot create '", index_path_, "': ", std::strerror(e));
  }
  uint8_t zero[kHeaderBytes] = {};
  write(data_, zero, kHeaderBytes, data_path_);
  write(index_, zero, kHeaderBytes, index_path_);
  data_offset_ = kHeaderBytes;
}

DatasetWriter::~DatasetWriter() {
  if (data_) std::fclose(static_cast<FILE*>(data_));
  if (index_) std::fclose(static_cast<FILE*>(index_));
}

void DatasetWriter::write(void* f, const void* p, size_t n, const std::string& what) {
  if (n == 0) return;
  size_t w = std::fwrite(p, 1, n, static_cast<FILE*>(f));
  IPSNET_CHECK(w == n, "writing '", what, "' failed after ", w, " of ", n, " bytes: ", std::strerror(errno),
               " (disk full?)");
}

int64_t DatasetWriter::bytes() const { return static_cast<int64_t>(data_offset_ + kHeaderBytes + index_bytes_); }

void DatasetWriter::append(const std::vector<uint8_t>& record, int64_t nnz_high, int64_t nnz_low,
                           const ImageMeta& meta) {
  IPSNET_CHECK(data_ && index_, "DatasetWriter::append after finish()");
  IPSNET_CHECK(static_cast<int64_t>(meta.digits.size()) <= kMaxDigitsPerImage, "image has ", meta.digits.size(),
               " digits, the format stores at most ", kMaxDigitsPerImage);
  uint8_t e[kEntryBytes] = {};
  put<uint64_t>(e, 0, data_offset_);
  put<uint64_t>(e, 8, record.size());
  put<uint32_t>(e, 16, crc32_of(record.data(), record.size()));
  put<uint32_t>(e, 20, static_cast<uint32_t>(nnz_high));
  put<uint32_t>(e, 24, static_cast<uint32_t>(nnz_low));
  put<int32_t>(e, 28, static_cast<int32_t>(meta.n_noise));
  put<int32_t>(e, 32, static_cast<int32_t>(meta.digits.size()));
  put<int8_t>(e, 36, static_cast<int8_t>(meta.majority));
  put<int8_t>(e, 37, static_cast<int8_t>(meta.max));
  put<int8_t>(e, 38, static_cast<int8_t>(meta.top));
  uint16_t bits = 0;
  for (int c = 0; c < 10; ++c)
    if (meta.multi[c]) bits |= static_cast<uint16_t>(1u << c);
  put<uint16_t>(e, 40, bits);
  for (size_t d = 0; d < meta.digits.size(); ++d) {
    size_t o = 48 + 16 * d;
    put<int32_t>(e, o, static_cast<int32_t>(meta.digits[d].row));
    put<int32_t>(e, o + 4, static_cast<int32_t>(meta.digits[d].col));
    put<int32_t>(e, o + 8, static_cast<int32_t>(meta.digits[d].size));
    put<int32_t>(e, o + 12, meta.digits[d].label);
  }
  write(data_, record.data(), record.size(), data_path_);
  write(index_, e, kEntryBytes, index_path_);
  index_crc_ = crc32_of(e, kEntryBytes, index_crc_);
  data_offset_ += record.size();
  index_bytes_ += kEntryBytes;
  ++count_;
}

void DatasetWriter::finish() {
  IPSNET_CHECK(data_ && index_, "DatasetWriter::finish called twice");
  SplitHeader h = header_;
  h.n = count_;
  uint8_t dh[kHeaderBytes], ih[kHeaderBytes];
  encode_data_header(dh, h);
  encode_index_header(ih, count_, index_crc_, get<uint32_t>(dh, 60));
  for (auto [f, hdr, path] : {std::make_tuple(data_, dh, &data_path_), std::make_tuple(index_, ih, &index_path_)}) {
    FILE* fp = static_cast<FILE*>(f);
    IPSNET_CHECK(std::fseek(fp, 0, SEEK_SET) == 0, "seeking in '", *path, "' failed: ", std::strerror(errno));
    write(fp, hdr, kHeaderBytes, *path);
    IPSNET_CHECK(std::fflush(fp) == 0, "flushing '", *path, "' failed: ", std::strerror(errno), " (disk full?)");
  }
  FILE* d = static_cast<FILE*>(data_);
  FILE* i = static_cast<FILE*>(index_);
  data_ = index_ = nullptr;
  int rd = std::fclose(d);
  int ed = errno;
  int ri = std::fclose(i);
  IPSNET_CHECK(rd == 0, "closing '", data_path_, "' failed: ", std::strerror(ed), " (disk full?)");
  IPSNET_CHECK(ri == 0, "closing '", index_path_, "' failed: ", std::strerror(errno), " (disk full?)");
}

// ---- reader ----------------------------------------------------------------


DatasetReader DatasetReader::open(const std::string& dir, const std::string& split) {
  IPSNET_CHECK(split == "train" || split == "test", "split must be 'train' or 'test', got '", split, "'");
  DatasetReader r;
  r.path_ = dir + "/" + split + ".ipsd";
  std::string ipath = dir + "/" + split + ".ipsx";
  r.data_map_ = MappedFile::map(r.path_);
  r.index_map_ = MappedFile::map(ipath);
  const uint8_t* dh = r.data_map_->ptr;
  const uint8_t* ih = r.index_map_->ptr;
  IPSNET_CHECK(r.data_map_->size >= kHeaderBytes && std::memcmp(dh, kDataMagic, 8) == 0, "'", r.path_,
               "' is not an ipsnet dataset file (bad magic or truncated)");
  IPSNET_CHECK(r.index_map_->size >= kHeaderBytes && std::memcmp(ih, kIndexMagic, 8) == 0, "'", ipath,
               "' is not an ipsnet index file (bad magic or truncated)");
  IPSNET_CHECK(get<uint32_t>(dh, 8) == kDatasetVersion, "'", r.path_, "' has format version ", get<uint32_t>(dh, 8),
               ", this ipsnet reads version ", kDatasetVersion, "; regenerate the dataset");
  IPSNET_CHECK(get<uint32_t>(ih, 8) == kDatasetVersion, "'", ipath, "' has format version ", get<uint32_t>(ih, 8),
               ", this ipsnet reads version ", kDatasetVersion, "; regenerate the dataset");
  IPSNET_CHECK(get<uint32_t>(dh, 60) == crc32_of(dh, 60), "'", r.path_, "': header checksum mismatch (corrupt file)");
  IPSNET_CHECK(get<uint32_t>(ih, 60) == crc32_of(ih, 60), "'", ipath, "': header checksum mismatch (corrupt file)");
  IPSNET_CHECK(get<uint32_t>(ih, 28) == get<uint32_t>(dh, 60), "'", ipath, "' does not belong to '", r.path_,
               "' (data header checksum differs)");
  IPSNET_CHECK(get<uint32_t>(ih, 12) == kEntryBytes, "'", ipath, "' has ", get<uint32_t>(ih, 12),
               "-byte entries, expected ", kEntryBytes);
  SplitHeader& h = r.header_;
  h.n = get<int64_t>(dh, 16);
  h.height = get<int64_t>(dh, 24);
  h.width = get<int64_t>(dh, 32);
  h.lowres_height = get<int64_t>(dh, 40);
  h.lowres_width = get<int64_t>(dh, 48);
  h.style = style_name(get<uint32_t>(dh, 56));
  // Columns are 16-bit: a side above kMaxCanvasSide (or a negative one) is corruption,
  // refused before anything is sized by it.
  IPSNET_CHECK(h.height >= 1 && h.width >= 1 && h.height <= kMaxCanvasSide && h.width <= kMaxCanvasSide && h.lowres_height >= 0 &&
                   h.lowres_width >= 0 && h.lowres_height <= h.height && h.lowres_width <= h.width &&
                   (h.lowres_height == 0) == (h.lowres_width == 0),
               "'", r.path_, "': canvas ", h.height, "x", h.width, " with low-resolution view ", h.lowres_height, "x",
               h.lowres_width, " is not a valid size (corrupt file)");
  IPSNET_CHECK(get<int64_t>(ih, 16) == h.n, "'", ipath, "' indexes ", get<int64_t>(ih, 16), " images but '", r.path_,
               "' holds ", h.n);
  IPSNET_CHECK(h.n >= 0 && r.index_map_->size == kHeaderBytes + kEntryBytes * static_cast<uint64_t>(h.n), "'",
               ipath, "' has ", r.index_map_->size, " bytes, expected ", kHeaderBytes + kEntryBytes * h.n,
               " for ", h.n, " images (truncated?)");
  IPSNET_CHECK(get<uint32_t>(ih, 24) == crc32_of(ih + kHeaderBytes, kEntryBytes * h.n), "'", ipath,
               "': index checksum mismatch (corrupt file)");
  uint64_t expect_off = kHeaderBytes;
  r.metas_.resize(h.n);
  for (int64_t i = 0; i < h.n; ++i) {
    const uint8_t* e = ih + kHeaderBytes + kEntryBytes * i;
    uint64_t off = get<uint64_t>(e, 0), bytes = get<uint64_t>(e, 8);
    IPSNET_CHECK(off == expect_off && off + bytes <= r.data_map_->size, "'", ipath, "': entry ", i,
                 " points at bytes ", off, "+", bytes, " outside '", r.path_, "' (", r.data_map_->size,
                 " bytes; truncated?)");
    int64_t nnz = get<uint32_t>(e, 20), nnz_low = get<uint32_t>(e, 24);
    int64_t need = view_bytes(h.height, nnz) + (h.lowres_height > 0 ? view_bytes(h.lowres_height, nnz_low) : 0);
    IPSNET_CHECK(static_cast<uint64_t>(align_up(need, 8)) == bytes, "'", ipath, "': entry ", i, " has ", bytes,
                 " record bytes, expected ", align_up(need, 8), " for ", nnz, " nonzeros");
    expect_off = off + bytes;
    ImageMeta& m = r.metas_[i];
    m.n_noise = get<int32_t>(e, 28);
    int32_t nd = get<int32_t>(e, 32);
    IPSNET_CHECK(nd >= 0 && nd <= kMaxDigitsPerImage, "'", ipath, "': entry ", i, " has ", nd, " digits");
    m.majority = get<int8_t>(e, 36);
    m.max = get<int8_t>(e, 37);
    m.top = get<int8_t>(e, 38);
    uint16_t bits = get<uint16_t>(e, 40);
    for (int c = 0; c < 10; ++c) m.multi[c] = (bits >> c) & 1u;
    for (int d = 0; d < nd; ++d) {
      size_t o = 48 + 16 * d;
      m.digits.push_back({get<int32_t>(e, o), get<int32_t>(e, o + 4), get<int32_t>(e, o + 8), get<int32_t>(e, o + 12)});
    }
  }
  IPSNET_CHECK(expect_off == r.data_map_->size, "'", r.path_, "' has ", r.data_map_->size, " bytes, the index covers ",
               expect_off, " (trailing or missing data)");
  r.verified_ = std::make_shared<std::vector<std::atomic<uint8_t>>>(h.n);
  for (auto& v : *r.verified_) v.store(0);
  return r;
}

void DatasetReader::check_index(int64_t i) const {
  IPSNET_CHECK(i >= 0 && i < header_.n, "image index ", i, " out of range [0, ", header_.n, ") in '", path_, "'");
}

const uint8_t* DatasetReader::entry(int64_t i) const {
  return index_map_->ptr + kHeaderBytes + kEntryBytes * i;
}

const ImageMeta& DatasetReader::meta(int64_t i) const {
  check_index(i);
  return metas_[i];
}

int64_t DatasetReader::nnz(int64_t i) const {
  check_index(i);
  return get<uint32_t>(entry(i), 20);
}

int64_t DatasetReader::lowres_nnz(int64_t i) const {
  check_index(i);
  return get<uint32_t>(entry(i), 24);
}

int64_t DatasetReader::record_bytes(int64_t i) const {
  check_index(i);
  return static_cast<int64_t>(get<uint64_t>(entry(i), 8));
}

void DatasetReader::verify(int64_t i) const {
  check_index(i);
  const uint8_t* e = entry(i);
  uint64_t off = get<uint64_t>(e, 0), bytes = get<uint64_t>(e, 8);
  uint32_t crc = crc32_of(data_map_->ptr + off, bytes);
  IPSNET_CHECK(crc == get<uint32_t>(e, 16), "'", path_, "': image ", i, " fails its checksum (corrupt file)");
  // The checksum guards against chance; the structure is checked too, so that
  // a record written wrong (or on purpose) is one error, not a read out of
  // bounds: row counts that sum to nnz, group offsets that agree with them,
  // columns inside the canvas and ascending within a row, finite values.
  for (bool low : {false, true}) {
    if (low && !has_lowres()) continue;
    const View v = raw_view(i, low);
    const char* which = low ? "low-resolution view" : "image";
    int64_t acc = 0;
    for (int64_t r = 0; r < v.height; ++r) {
      if (r % kRowGroup == 0)
        IPSNET_CHECK(v.group_off[r / kRowGroup] == acc, "'", path_, "': ", which, " ", i, " has a row-group offset of ",
                     v.group_off[r / kRowGroup], " at row ", r, ", expected ", acc, " (corrupt record)");
      const int64_t n = v.row_counts[r];
      IPSNET_CHECK(acc + n <= v.nnz, "'", path_, "': ", which, " ", i, " has more nonzeros in its rows than its ",
                   v.nnz, " (corrupt record)");
      for (int64_t j = 0; j < n; ++j) {
        const int64_t c = v.cols[acc + j];
        IPSNET_CHECK(c < v.width && (j == 0 || c > v.cols[acc + j - 1]), "'", path_, "': ", which, " ", i, " row ", r,
                     " has column ", c, " out of order or outside the width ", v.width, " (corrupt record)");
        IPSNET_CHECK(std::isfinite(v.vals[acc + j]), "'", path_, "': ", which, " ", i, " holds a non-finite value",
                     " (corrupt record)");
      }
      acc += n;
    }
    IPSNET_CHECK(acc == v.nnz && v.group_off[groups_of(v.height)] == acc, "'", path_, "': ", which, " ", i,
                 " row counts sum to ", acc, ", expected ", v.nnz, " (corrupt record)");
  }
  (*verified_)[i].store(1, std::memory_order_release);
}

void DatasetReader::verify_all() const {
  for (int64_t i = 0; i < header_.n; ++i) verify(i);
}

DatasetReader::View DatasetReader::view(int64_t i, bool lowres) const {
  check_index(i);
  if (!(*verified_)[i].load(std::memory_order_acquire)) verify(i);
  return raw_view(i, lowres);
}

DatasetReader::View DatasetReader::raw_view(int64_t i, bool lowres) const {
  const uint8_t* e = entry(i);
  const uint8_t* p = data_map_->ptr + get<uint64_t>(e, 0);
  View v;
  v.height = header_.height;
  v.width = header_.width;
  v.nnz = get<uint32_t>(e, 20);
  if (lowres) {
    IPSNET_CHECK(has_lowres(), "'", path_, "' (style ", header_.style, ") has no low-resolution view");
    p += view_bytes(v.height, v.nnz);
    v.height = header_.lowres_height;
    v.width = header_.lowres_width;
    v.nnz = get<uint32_t>(e, 24);
  }
  int64_t g = groups_of(v.height);
  v.group_off = reinterpret_cast<const uint32_t*>(p);
  v.vals = reinterpret_cast<const float*>(p + 4 * (g + 1));
  v.row_counts = reinterpret_cast<const uint16_t*>(p + 4 * (g + 1) + 4 * v.nnz);
  v.cols = v.row_counts + v.height;
  return v;
}

namespace {
// nnz offset of the first nonzero of row r.
inline int64_t row_start(const uint32_t* group_off, const uint16_t* row_counts, int64_t r) {
  int64_t g = r / kRowGroup;
  int64_t off = group_off[g];
  for (int64_t k = g * kRowGroup; k < r; ++k) off += row_counts[k];
  return off;
}
}  // namespace

void DatasetReader::read_image(int64_t i, float* dst) const {
  View v = view(i, false);
  std::fill(dst, dst + v.height * v.width, 0.0f);
  int64_t k = 0;
  for (int64_t r = 0; r < v.height; ++r) {
    float* row = dst + r * v.width;
    for (int64_t j = 0, n = v.row_counts[r]; j < n; ++j, ++k) row[v.cols[k]] = v.vals[k];
  }
}

void DatasetReader::read_lowres(int64_t i, float* dst) const {
  View v = view(i, true);
  std::fill(dst, dst + v.height * v.width, 0.0f);
  int64_t k = 0;
  for (int64_t r = 0; r < v.height; ++r) {
    float* row = dst + r * v.width;
    for (int64_t j = 0, n = v.row_counts[r]; j < n; ++j, ++k) row[v.cols[k]] = v.vals[k];
  }
}

SparseImage DatasetReader::read_sparse(int64_t i, bool lowres) const {
  View v = view(i, lowres);
  SparseImage s;
  s.height = v.height;
  s.width = v.width;
  s.row_counts.assign(v.row_counts, v.row_counts + v.height);
  s.cols.assign(v.cols, v.cols + v.nnz);
  s.vals.assign(v.vals, v.vals + v.nnz);
  return s;
}

void DatasetReader::read_region(int64_t i, int64_t r0, int64_t c0, int64_t h, int64_t w, float* dst) const {
  IPSNET_CHECK(h >= 0 && w >= 0, "read_region: region size ", h, "x", w, " must be non-negative");
  View v = view(i, false);
  std::fill(dst, dst + h * w, 0.0f);
  int64_t ra = std::max<int64_t>(r0, 0), rb = std::min<int64_t>(r0 + h, v.height);
  int64_t ca = std::max<int64_t>(c0, 0), cb = std::min<int64_t>(c0 + w, v.width);
  if (ra >= rb || ca >= cb) return;
  int64_t off = row_start(v.group_off, v.row_counts, ra);
  for (int64_t r = ra; r < rb; ++r) {
    int64_t n = v.row_counts[r];
    const uint16_t* cb0 = v.cols + off;
    const uint16_t* it = std::lower_bound(cb0, cb0 + n, static_cast<uint16_t>(ca));
    float* out = dst + (r - r0) * w - c0;
    for (; it != cb0 + n && *it < cb; ++it) out[*it] = v.vals[off + (it - cb0)];
    off += n;
  }
}

bool DatasetReader::region_is_zero(int64_t i, int64_t r0, int64_t c0, int64_t h, int64_t w) const {
  View v = view(i, false);
  int64_t ra = std::max<int64_t>(r0, 0), rb = std::min<int64_t>(r0 + h, v.height);
  int64_t ca = std::max<int64_t>(c0, 0), cb = std::min<int64_t>(c0 + w, v.width);
  if (ra >= rb || ca >= cb) return true;
  int64_t off = row_start(v.group_off, v.row_counts, ra);
  for (int64_t r = ra; r < rb; ++r) {
    int64_t n = v.row_counts[r];
    if (n > 0) {
      const uint16_t* cb0 = v.cols + off;
      const uint16_t* it = std::lower_bound(cb0, cb0 + n, static_cast<uint16_t>(ca));
      if (it != cb0 + n && *it < cb) return false;
    }
    off += n;
  }
  return true;
}

}  // namespace data
}  // namespace ipsnet

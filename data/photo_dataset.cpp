#include "data/photo_dataset.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>

#include "data/binary_file.h"
#include "engine/common/error.h"

namespace ipsnet {
namespace data {

namespace fs = std::filesystem;

namespace {

constexpr size_t kHeaderBytes = 64;
constexpr size_t kEntryBytes = 64;
const char kDataMagic[9] = "IPSNPHOT";
const char kIndexMagic[9] = "IPSNPIDX";


std::string split_file(const std::string& dir, const std::string& split, const char* ext) {
  return (fs::path(dir) / (split + ext)).string();
}

}  // namespace

bool is_photo_dataset(const std::string& dir) {
  return fs::exists(split_file(dir, "train", ".ipspx")) || fs::exists(split_file(dir, "test", ".ipspx"));
}

// ---- writer ------------------------------------------------------------------

PhotoWriter::PhotoWriter(const std::string& dir, const std::string& split, std::vector<PhotoTask> tasks)
    : tasks_(std::move(tasks)), data_(split_file(dir, split, ".ipsp")), index_(split_file(dir, split, ".ipspx")) {
  IPSNET_CHECK(!tasks_.empty() && tasks_.size() <= static_cast<size_t>(kMaxPhotoTasks), "a photograph dataset has 1 to ",
               kMaxPhotoTasks, " label columns, got ", tasks_.size());
  uint8_t h[kHeaderBytes] = {0};
  std::memcpy(h, kDataMagic, 8);
  put<uint32_t>(h, 8, kPhotoVersion);
  put<uint32_t>(h, 12, static_cast<uint32_t>(kHeaderBytes));
  // A random-enough id ties the index to this data file.
  const uint64_t id = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
                      (static_cast<uint64_t>(::getpid()) << 40) ^ reinterpret_cast<uintptr_t>(this);
  put<uint64_t>(h, 16, id);
  put<uint32_t>(h, 60, crc32_of(h, 60));
  data_header_crc_ = get<uint32_t>(h, 60);
  data_.write(h, kHeaderBytes);
  offset_ = kHeaderBytes;
}

void PhotoWriter::append(const std::vector<uint8_t>& bytes, const PhotoEntry& e) {
  IPSNET_CHECK(e.labels.size() == tasks_.size(), "image '", e.path, "': ", e.labels.size(), " labels for ",
               tasks_.size(), " tasks");
  IPSNET_CHECK(e.height >= 1 && e.width >= 1 && e.height <= 0xffffffffLL && e.width <= 0xffffffffLL, "image '",
               e.path, "': size ", e.height, "x", e.width);
  uint8_t en[kEntryBytes] = {0};
  put<uint64_t>(en, 0, offset_);
  put<uint64_t>(en, 8, bytes.size());
  put<uint32_t>(en, 16, crc32_of(bytes.data(), bytes.size()));
  put<uint32_t>(en, 20, static_cast<uint32_t>(e.height));
  put<uint32_t>(en, 24, static_cast<uint32_t>(e.width));
  en[28] = static_cast<uint8_t>(e.format);
  en[29] = static_cast<uint8_t>(e.channels);
  put<uint16_t>(en, 30, static_cast<uint16_t>(e.labels.size()));
  for (size_t t = 0; t < e.labels.size(); ++t) {
    IPSNET_CHECK(e.labels[t] >= 0 && static_cast<size_t>(e.labels[t]) < tasks_[t].classes.size(), "image '", e.path,
                 "': class ", e.labels[t], " outside task '", tasks_[t].name, "'");
    put<int32_t>(en, 32 + 4 * t, e.labels[t]);
  }
  entries_bytes_.insert(entries_bytes_.end(), en, en + kEntryBytes);
  entries_.push_back(e);
  data_.write(bytes.data(), bytes.size());
  offset_ += bytes.size();
  static const uint8_t kZero[8] = {0};
  const size_t pad = (8 - offset_ % 8) % 8;
  if (pad) data_.write(kZero, pad);
  offset_ += pad;
}

void PhotoWriter::finish(int channels) {
  IPSNET_CHECK(channels == 1 || channels == 3, "photo dataset: channels 1 or 3, not ", channels);
  std::string table;
  for (const PhotoTask& t : tasks_) {
    table += "task\t" + t.name;
    for (const std::string& c : t.classes) table += "\t" + c;
    table += "\n";
  }
  for (const PhotoEntry& e : entries_) table += "path\t" + e.path + "\n";
  uint8_t h[kHeaderBytes] = {0};
  std::memcpy(h, kIndexMagic, 8);
  put<uint32_t>(h, 8, kPhotoVersion);
  put<uint32_t>(h, 12, static_cast<uint32_t>(kEntryBytes));
  put<int64_t>(h, 16, static_cast<int64_t>(entries_.size()));
  put<uint32_t>(h, 24, crc32_of(entries_bytes_.data(), entries_bytes_.size()));
  put<uint32_t>(h, 28, data_header_crc_);
  put<uint64_t>(h, 32, table.size());
  put<uint32_t>(h, 40, crc32_of(table.data(), table.size()));
  put<uint32_t>(h, 44, static_cast<uint32_t>(channels));
  put<uint32_t>(h, 48, static_cast<uint32_t>(tasks_.size()));
  put<uint64_t>(h, 52, offset_);
  put<uint32_t>(h, 60, crc32_of(h, 60));
  index_.write(h, kHeaderBytes);
  index_.write(entries_bytes_.data(), entries_bytes_.size());
  index_.write(table);
  data_.commit();
  index_.commit();
}

// ---- reader ------------------------------------------------------------------

namespace {
std::string read_all(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  IPSNET_CHECK(f != nullptr, "cannot open '", path, "': ", std::strerror(errno));
  std::string s;
  char buf[1 << 16];
  size_t k;
  while ((k = std::fread(buf, 1, sizeof(buf), f)) > 0) s.append(buf, k);
  const bool err = std::ferror(f) != 0;
  std::fclose(f);
  IPSNET_CHECK(!err, "cannot read '", path, "'");
  return s;
}
}  // namespace


PhotoReader PhotoReader::open(const std::string& dir, const std::string& split) {
  IPSNET_CHECK(split == "train" || split == "test", "split must be 'train' or 'test', got '", split, "'");
  PhotoReader r;
  r.path_ = split_file(dir, split, ".ipsp");
  const std::string ipath = split_file(dir, split, ".ipspx");
  IPSNET_CHECK(fs::exists(ipath), "'", dir, "' has no ", split, " split (", ipath, " is missing)");
  r.data_ = MappedFile::map(r.path_);
  const std::string index = read_all(ipath);
  const uint8_t* ih = reinterpret_cast<const uint8_t*>(index.data());
  IPSNET_CHECK(index.size() >= kHeaderBytes && std::memcmp(ih, kIndexMagic, 8) == 0, "'", ipath,
               "': not an ipsnet photograph index (bad magic)");
  IPSNET_CHECK(get<uint32_t>(ih, 60) == crc32_of(ih, 60), "'", ipath, "': header checksum mismatch (corrupt file)");
  IPSNET_CHECK(get<uint32_t>(ih, 8) == kPhotoVersion, "'", ipath, "': version ", get<uint32_t>(ih, 8),
               ", this ipsnet reads version ", kPhotoVersion);
  IPSNET_CHECK(get<uint32_t>(ih, 12) == kEntryBytes, "'", ipath, "': entry size ", get<uint32_t>(ih, 12));
  const uint8_t* dh = r.data_->ptr;
  IPSNET_CHECK(r.data_->size >= kHeaderBytes && std::memcmp(dh, kDataMagic, 8) == 0, "'", r.path_,
               "': not an ipsnet photograph data file (bad magic or truncated)");
  IPSNET_CHECK(get<uint32_t>(dh, 60) == crc32_of(dh, 60), "'", r.path_, "': header checksum mismatch (corrupt file)");
  IPSNET_CHECK(get<uint32_t>(ih, 28) == get<uint32_t>(dh, 60), "'", ipath, "' does not belong to '", r.path_,
               "' (the files come from different imports)");
  const int64_t n = get<int64_t>(ih, 16);
  const uint64_t table_bytes = get<uint64_t>(ih, 32);
  IPSNET_CHECK(n >= 0 && index.size() == kHeaderBytes + static_cast<uint64_t>(n) * kEntryBytes + table_bytes, "'",
               ipath, "': ", index.size(), " bytes, the header announces ", n, " entries and a ", table_bytes,
               "-byte table (truncated or corrupt file)");
  IPSNET_CHECK(get<uint64_t>(ih, 52) == r.data_->size, "'", r.path_, "': ", r.data_->size,
               " bytes, the index expects ", get<uint64_t>(ih, 52), " (truncated or corrupt file)");
  const uint8_t* entries = ih + kHeaderBytes;
  IPSNET_CHECK(get<uint32_t>(ih, 24) == crc32_of(entries, static_cast<size_t>(n) * kEntryBytes), "'", ipath,
               "': index checksum mismatch (corrupt file)");
  const char* table = index.data() + kHeaderBytes + n * kEntryBytes;
  IPSNET_CHECK(get<uint32_t>(ih, 40) == crc32_of(table, table_bytes), "'", ipath,
               "': label table checksum mismatch (corrupt file)");
  r.channels_ = static_cast<int>(get<uint32_t>(ih, 44));
  IPSNET_CHECK(r.channels_ == 1 || r.channels_ == 3, "'", ipath, "': channels ", r.channels_);
  const uint32_t n_tasks = get<uint32_t>(ih, 48);
  std::istringstream ts(std::string(table, table_bytes));
  std::string line;
  std::vector<std::string> paths;
  while (std::getline(ts, line)) {
    std::vector<std::string> f;
    size_t s = 0;
    for (;;) {
      size_t t = line.find('\t', s);
      f.push_back(line.substr(s, t == std::string::npos ? std::string::npos : t - s));
      if (t == std::string::npos) break;
      s = t + 1;
    }
    if (f[0] == "task" && f.size() >= 2) {
      r.tasks_.push_back({f[1], std::vector<std::string>(f.begin() + 2, f.end())});
    } else if (f[0] == "path" && f.size() == 2) {
      paths.push_back(f[1]);
    } else {
      IPSNET_FAIL("'", ipath, "': bad label table line '", line, "'");
    }
  }
  IPSNET_CHECK(r.tasks_.size() == n_tasks && paths.size() == static_cast<size_t>(n), "'", ipath, "': label table has ",
               r.tasks_.size(), " tasks and ", paths.size(), " paths, the header says ", n_tasks, " and ", n);
  r.entries_.resize(static_cast<size_t>(n));
  r.offsets_.resize(static_cast<size_t>(n));
  r.sizes_.resize(static_cast<size_t>(n));
  r.crcs_.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* e = entries + i * kEntryBytes;
    PhotoEntry& pe = r.entries_[static_cast<size_t>(i)];
    const uint64_t off = get<uint64_t>(e, 0), bytes = get<uint64_t>(e, 8);
    IPSNET_CHECK(off >= kHeaderBytes && off <= r.data_->size && bytes <= r.data_->size - off, "'", ipath,
                 "': entry ", i, " points outside '", r.path_, "' (corrupt file)");
    r.offsets_[static_cast<size_t>(i)] = off;
    r.sizes_[static_cast<size_t>(i)] = bytes;
    r.crcs_[static_cast<size_t>(i)] = get<uint32_t>(e, 16);
    pe.height = get<uint32_t>(e, 20);
    pe.width = get<uint32_t>(e, 24);
    pe.format = static_cast<PhotoFormat>(e[28]);
    pe.channels = e[29];
    const uint16_t nl = get<uint16_t>(e, 30);
    IPSNET_CHECK(nl == n_tasks, "'", ipath, "': entry ", i, " has ", nl, " labels for ", n_tasks, " tasks");
    for (uint16_t t = 0; t < nl; ++t) {
      const int32_t c = get<int32_t>(e, 32 + 4 * t);
      IPSNET_CHECK(c >= 0 && static_cast<size_t>(c) < r.tasks_[t].classes.size(), "'", ipath, "': entry ", i,
                   " has class ", c, " in task '", r.tasks_[t].name, "' of ", r.tasks_[t].classes.size());
      pe.labels.push_back(c);
    }
    pe.path = paths[static_cast<size_t>(i)];
  }
  r.verified_ = std::make_shared<std::vector<std::atomic<uint8_t>>>(static_cast<size_t>(n));
  return r;
}

const PhotoEntry& PhotoReader::entry(int64_t i) const {
  IPSNET_CHECK(i >= 0 && i < size(), "image ", i, " of ", size(), " in '", path_, "'");
  return entries_[static_cast<size_t>(i)];
}

std::string PhotoReader::name(int64_t i) const {
  return str_cat("'", path_, "' image ", i, " (", entry(i).path, ")");
}

void PhotoReader::verify(int64_t i) const {
  (void)entry(i);
  const size_t k = static_cast<size_t>(i);
  const uint32_t crc = crc32_of(data_->ptr + offsets_[k], sizes_[k]);
  IPSNET_CHECK(crc == crcs_[k], name(i), " fails its checksum (corrupt file)");
  (*verified_)[k].store(1, std::memory_order_release);
}

void PhotoReader::verify_all() const {
  for (int64_t i = 0; i < size(); ++i) verify(i);
}

const uint8_t* PhotoReader::bytes(int64_t i, size_t* n) const {
  (void)entry(i);
  const size_t k = static_cast<size_t>(i);
  if (!(*verified_)[k].load(std::memory_order_acquire)) verify(i);
  *n = static_cast<size_t>(sizes_[k]);
  return data_->ptr + offsets_[k];
}

// ---- data-info -----------------------------------------------------------------

std::string describe_photo_dataset(const std::string& dir, bool verify) {
  std::ostringstream os;
  for (const char* split : {"train", "test"}) {
    if (!fs::exists(split_file(dir, split, ".ipspx"))) {
      os << "\n[" << split << "] missing\n";
      continue;
    }
    PhotoReader r = PhotoReader::open(dir, split);
    if (verify) r.verify_all();
    int64_t formats[3] = {0, 0, 0}, gray = 0, min_h = -1, max_h = 0, min_w = -1, max_w = 0;
    std::map<std::pair<int64_t, int64_t>, int64_t> sizes;
    double pixels = 0;
    for (int64_t i = 0; i < r.size(); ++i) {
      const PhotoEntry& e = r.entry(i);
      ++formats[static_cast<int>(e.format) % 3];
      if (e.channels == 1) ++gray;
      min_h = min_h < 0 ? e.height : std::min(min_h, e.height);
      min_w = min_w < 0 ? e.width : std::min(min_w, e.width);
      max_h = std::max(max_h, e.height);
      max_w = std::max(max_w, e.width);
      ++sizes[{e.height, e.width}];
      pixels += static_cast<double>(e.height) * e.width;
    }
    const int64_t bytes = static_cast<int64_t>(fs::file_size(split_file(dir, split, ".ipsp")) +
                                               fs::file_size(split_file(dir, split, ".ipspx")));
    const int64_t n = std::max<int64_t>(1, r.size());
    os << "\n[" << split << "] " << r.size() << " photographs, " << r.channels() << " channel"
       << (r.channels() == 1 ? "" : "s") << (verify ? ", checksums OK" : "") << "\n";
    os << "  formats: " << formats[1] << " JPEG, " << formats[2] << " PNG";
    if (r.channels() == 3 && gray > 0) os << " (" << gray << " grayscale, read as RGB)";
    os << "\n";
    if (r.size() > 0) {
      auto common = std::max_element(sizes.begin(), sizes.end(),
                                     [](const auto& a, const auto& b) { return a.second < b.second; });
      os << "  size (H x W): " << (sizes.size() == 1 ? "all " : "from ");
      if (sizes.size() == 1)
        os << min_h << "x" << min_w;
      else
        os << min_h << "x" << min_w << " to " << max_h << "x" << max_w << " (heights x widths), " << sizes.size()
           << " distinct, most common " << common->first.first << "x" << common->first.second << " ("
           << common->second << ")";
      os << "\n";
    }
    for (size_t t = 0; t < r.tasks().size(); ++t) {
      const PhotoTask& task = r.tasks()[t];
      std::vector<int64_t> count(task.classes.size(), 0);
      for (int64_t i = 0; i < r.size(); ++i) ++count[static_cast<size_t>(r.entry(i).labels[t])];
      os << "  task '" << task.name << "', " << task.classes.size() << " classes:";
      for (size_t c = 0; c < task.classes.size(); ++c) os << " " << c << "=" << task.classes[c] << ":" << count[c];
      os << "\n";
    }
    char buf[160];
    std::snprintf(buf, sizeof(buf), "  size on disk: %.2f MiB, %.1f KiB per image (%.2f bits per pixel)\n",
                  bytes / 1048576.0, bytes / 1024.0 / n, pixels > 0 ? bytes * 8.0 / pixels : 0.0);
    os << buf;
  }
  return os.str();
}

}  // namespace data
}  // namespace ipsnet

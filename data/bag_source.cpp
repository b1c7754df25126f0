// The "bags" data source (data/bag_source.h).
#include "data/bag_source.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/common/error.h"

namespace ipsnet {
namespace data {

namespace {
constexpr const char* kLabel = "metastases";
}

bool BagSource::detect(const std::string& dir) { return std::filesystem::is_regular_file(dir + "/bags.csv"); }

std::unique_ptr<DataSource> BagSource::open(const std::string& dir, const std::string& split,
                                            const SourceOptions& options) {
  IPSNET_CHECK(options.normalize == "none" && options.jitter == 0 && options.translate == 0,
               "the bags data source holds features, not pixels: normalize, augment_jitter and augment_translate "
               "do not apply (got normalize ", options.normalize, ")");
  const std::string csv = dir + "/bags.csv";
  std::ifstream in(csv);
  IPSNET_CHECK(in.good(), "cannot open '", csv, "'");
  std::string line;
  std::getline(in, line);
  IPSNET_CHECK(line.rfind("name,split,label,n,F,file", 0) == 0, csv, ": unexpected header '", line,
               "' (expected name,split,label,n,F,file from `ipsnet extract-features`)");
  auto src = std::unique_ptr<BagSource>(new BagSource());
  src->dir_ = dir;
  src->split_ = split;
  std::vector<std::string> splits;
  int lineno = 1;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty()) continue;
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string c; std::getline(ss, c, ',');) f.push_back(c);
    IPSNET_CHECK(f.size() == 6, csv, ":", lineno, ": expected name,split,label,n,F,file, got '", line, "'");
    if (std::find(splits.begin(), splits.end(), f[1]) == splits.end()) splits.push_back(f[1]);
    if (f[1] != split) continue;
    BagReader b = BagReader::open(dir + "/" + f[5]);
    int64_t n = -1, F = -1;
    try {
      n = std::stoll(f[3]);
      F = std::stoll(f[4]);
    } catch (const std::exception&) {
      IPSNET_FAIL(csv, ":", lineno, ": n and F must be integers in '", line, "'");
    }
    IPSNET_CHECK(b.info().n == n && b.info().F == F, "the bag '", b.path(), "' holds ", b.info().n, " x ",
                 b.info().F, " features but ", csv, " says ", n, " x ", F);
    IPSNET_CHECK(b.info().n >= 1, "the bag '", b.path(), "' holds no instances");
    if (src->F_ == 0) src->F_ = F;
    IPSNET_CHECK(F == src->F_, "the bag '", b.path(), "' has ", F, " features per instance but the first bag of '",
                 dir, "' has ", src->F_, ": extract every slide with the same encoder");
    src->bags_.push_back(std::move(b));
  }
  std::string known;
  for (const auto& s : splits) known += (known.empty() ? "" : ", ") + (s.empty() ? std::string("(none)") : s);
  IPSNET_CHECK(!src->bags_.empty(), "'", dir, "' holds no bags of split '", split, "' (its splits: ",
               known.empty() ? std::string("none") : known, ")");
  src->verified_.reset(new std::atomic<bool>[src->bags_.size()]);
  for (size_t i = 0; i < src->bags_.size(); ++i) src->verified_[i] = false;
  return src;
}

std::string BagSource::describe() const {
  int64_t lo = bags_[0].info().n, hi = lo, sum = 0, pos = 0;
  for (const auto& b : bags_) {
    lo = std::min(lo, b.info().n);
    hi = std::max(hi, b.info().n);
    sum += b.info().n;
    pos += b.info().label == 1;
  }
  return str_cat("[", split_, "] ", bags_.size(), " bags (", pos, " positive), F ", F_, ", ", lo, " to ", hi,
                 " instances (mean ", sum / static_cast<int64_t>(bags_.size()), ")");
}

std::vector<LabelSpec> BagSource::labels() const { return {{kLabel, 1, true}}; }

std::vector<int64_t> BagSource::classes(int64_t i, const std::string& name) const {
  IPSNET_CHECK(name == kLabel, "the bags data source stores the label '", kLabel, "', not '", name, "'");
  const BagInfo& in = bag(i).info();
  IPSNET_CHECK(in.label == 0 || in.label == 1, "the bag of slide '", in.name, "' has no label (", in.label,
               "): give labels to `ipsnet wsi-tiles` (CAMELYON16 layout or --labels)");
  return in.label == 1 ? std::vector<int64_t>{0} : std::vector<int64_t>{};
}

int64_t BagSource::num_instances(int64_t i) const { return bag(i).info().n; }

const BagReader& BagSource::bag(int64_t i) const {
  IPSNET_CHECK(i >= 0 && i < size(), "bag ", i, " is outside [0, ", size(), ")");
  return bags_[static_cast<size_t>(i)];
}

void BagSource::read_instances(int64_t i, const int64_t* idx, int64_t n, float* dst) const {
  bag(i).read_rows(idx, n, dst);
}

void BagSource::prefetch(int64_t i) const {
  const BagReader& b = bag(i);
  if (verified_[static_cast<size_t>(i)].load()) return;
  b.verify();
  verified_[static_cast<size_t>(i)] = true;
}

}  // namespace data
}  // namespace ipsnet

// Feature bags to and from the IPS reference's and CLAM's HDF5 layouts
// (data/bag_hdf5.h).
#include "data/bag_hdf5.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <vector>

#include "data/bag_file.h"
#include "engine/common/error.h"
#include "engine/common/files.h"

#ifdef IPSNET_HAVE_HDF5
#include <hdf5.h>
#endif

namespace ipsnet {
namespace data {

namespace {
namespace fs = std::filesystem;

struct BagRow {
  std::string name, split, file;
  int64_t label = -1;
};

[[maybe_unused]] std::vector<BagRow> read_bags_csv(const std::string& dir) {
  const std::string csv = dir + "/bags.csv";
  std::ifstream in(csv);
  IPSNET_CHECK(in.good(), "'", dir, "' has no bags.csv (expected the output of `ipsnet extract-features`)");
  std::string line;
  std::getline(in, line);
  IPSNET_CHECK(line.rfind("name,split,label,n,F,file", 0) == 0, csv, ": unexpected header '", line, "'");
  std::vector<BagRow> rows;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string c; std::getline(ss, c, ',');) f.push_back(c);
    IPSNET_CHECK(f.size() == 6, csv, ": expected name,split,label,n,F,file, got '", line, "'");
    rows.push_back({f[0], f[1], f[5], std::stoll(f[2])});
  }
  return rows;
}

struct CsvLabel {
  int64_t label = -1;
  std::string split;
};

[[maybe_unused]] std::map<std::string, CsvLabel> read_labels(const std::string& path) {
  std::map<std::string, CsvLabel> out;
  if (path.empty()) return out;
  std::ifstream in(path);
  IPSNET_CHECK(in.good(), "cannot open the labels file '", path, "'");
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string c; std::getline(ss, c, ',');) f.push_back(c);
    IPSNET_CHECK(f.size() == 2 || f.size() == 3, path, ":", lineno, ": expected `slide,label[,split]`, got '", line,
                 "'");
    if (f[1] == "label") continue;  // header
    CsvLabel l;
    if (f[1] == "1" || f[1] == "tumor" || f[1] == "Tumor") l.label = 1;
    else if (f[1] == "0" || f[1] == "normal" || f[1] == "Normal") l.label = 0;
    else IPSNET_FAIL(path, ":", lineno, ": label '", f[1], "' is not one of 0, 1, normal, tumor");
    if (f.size() == 3) l.split = f[2];
    out[fs::path(f[0]).stem().string()] = l;
  }
  return out;
}

}  // namespace

#ifdef IPSNET_HAVE_HDF5

bool have_hdf5() { return true; }

namespace {

// An HDF5 identifier closed at scope exit.
class H5 {
 public:
  H5(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~H5() {
    if (id_ >= 0) close_(id_);
  }
  H5(H5&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  H5(const H5&) = delete;
  H5& operator=(const H5&) = delete;
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

void quiet_hdf5() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

void write_dataset(hid_t loc, const char* name, hid_t file_type, hid_t mem_type, const void* data, hsize_t rows,
                   hsize_t cols, const std::string& what) {
  hsize_t dims[2] = {rows, cols};
  H5 sp(H5Screate_simple(2, dims, nullptr), H5Sclose);
  H5 ds(H5Dcreate2(loc, name, file_type, sp.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  IPSNET_CHECK(sp.ok() && ds.ok(), "HDF5 cannot create the dataset '", name, "' in ", what);
  IPSNET_CHECK(rows == 0 || H5Dwrite(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0,
               "HDF5 cannot write the dataset '", name, "' in ", what, " (disk full?)");
}

void write_attr(hid_t obj, const char* name, int64_t v, const std::string& what) {
  H5 sp(H5Screate(H5S_SCALAR), H5Sclose);
  H5 a(H5Acreate2(obj, name, H5T_STD_I64LE, sp.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  IPSNET_CHECK(a.ok() && H5Awrite(a.get(), H5T_NATIVE_INT64, &v) >= 0, "HDF5 cannot write the attribute '", name,
               "' in ", what);
}

bool read_attr(hid_t obj, const char* name, int64_t* v) {
  if (H5Aexists(obj, name) <= 0) return false;
  H5 a(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  return a.ok() && H5Aread(a.get(), H5T_NATIVE_INT64, v) >= 0;
}

// A 2-D dataset read whole into T (converted by HDF5 from its stored type).
template <typename T>
std::vector<T> read_dataset(hid_t loc, const char* name, hid_t mem_type, hsize_t* rows, hsize_t* cols,
                            const std::string& what) {
  IPSNET_CHECK(H5Lexists(loc, name, H5P_DEFAULT) > 0, what, " has no dataset '", name, "'");
  H5 ds(H5Dopen2(loc, name, H5P_DEFAULT), H5Dclose);
  IPSNET_CHECK(ds.ok(), "HDF5 cannot open the dataset '", name, "' of ", what);
  H5 sp(H5Dget_space(ds.get()), H5Sclose);
  hsize_t dims[2] = {0, 0};
  IPSNET_CHECK(H5Sget_simple_extent_ndims(sp.get()) == 2 && H5Sget_simple_extent_dims(sp.get(), dims, nullptr) == 2,
               "the dataset '", name, "' of ", what, " is not 2-D");
  std::vector<T> out(static_cast<size_t>(dims[0] * dims[1]));
  IPSNET_CHECK(out.empty() || H5Dread(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) >= 0,
               "HDF5 cannot read the dataset '", name, "' of ", what, " (truncated or damaged)");
  *rows = dims[0];
  *cols = dims[1];
  return out;
}

H5 open_file(const std::string& path) {
  quiet_hdf5();
  IPSNET_CHECK(fs::is_regular_file(path), "'", path, "' does not exist");
  H5 f(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  IPSNET_CHECK(f.ok(), "HDF5 cannot open '", path, "' (not an HDF5 file, truncated or damaged)");
  return f;
}

}  // namespace

int64_t export_bags_h5(const std::string& bags_dir, const std::string& layout, const std::string& out, bool force) {
  IPSNET_CHECK(layout == "ips" || layout == "clam", "layout '", layout, "' is not one of ips, clam");
  quiet_hdf5();
  auto rows = read_bags_csv(bags_dir);
  if (layout == "ips") {
    IPSNET_CHECK(force || !fs::exists(out), "'", out, "' already exists; pass --force to replace it");
    const std::string tmp = out + ".tmp-" + std::to_string(::getpid());
    {
      H5 f(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
      IPSNET_CHECK(f.ok(), "HDF5 cannot create '", tmp, "'");
      try {
        for (const BagRow& r : rows) {
          BagReader b = BagReader::open(bags_dir + "/" + r.file);
          const BagInfo& in = b.info();
          H5 g(H5Gcreate2(f.get(), in.name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
          IPSNET_CHECK(g.ok(), "HDF5 cannot create the group '", in.name, "' in '", out, "'");
          write_dataset(g.get(), "img", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, b.features(), in.n, in.F, out);
          write_dataset(g.get(), "pos", H5T_STD_I64LE, H5T_NATIVE_INT64, b.coords(), in.n, 2, out);
          write_attr(g.get(), "label", in.label, out);
        }
      } catch (...) {
        std::remove(tmp.c_str());
        throw;
      }
    }
    fs::rename(tmp, out);
    return static_cast<int64_t>(rows.size());
  }
  TempDirectory td(out, force);
  fs::create_directories(td.path() + "/h5_files");
  fs::create_directories(td.path() + "/patches");
  for (const BagRow& r : rows) {
    BagReader b = BagReader::open(bags_dir + "/" + r.file);
    const BagInfo& in = b.info();
    {
      const std::string p = td.path() + "/h5_files/" + in.name + ".h5";
      H5 f(H5Fcreate(p.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
      IPSNET_CHECK(f.ok(), "HDF5 cannot create '", p, "'");
      write_dataset(f.get(), "features", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, b.features(), in.n, in.F, p);
      write_dataset(f.get(), "coords", H5T_STD_I64LE, H5T_NATIVE_INT64, b.coords(), in.n, 2, p);
    }
    {
      const std::string p = td.path() + "/patches/" + in.name + ".h5";
      H5 f(H5Fcreate(p.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
      IPSNET_CHECK(f.ok(), "HDF5 cannot create '", p, "'");
      write_dataset(f.get(), "coords", H5T_STD_I64LE, H5T_NATIVE_INT64, b.coords(), in.n, 2, p);
      H5 ds(H5Dopen2(f.get(), "coords", H5P_DEFAULT), H5Dclose);
      write_attr(ds.get(), "patch_level", in.level, p);
      write_attr(ds.get(), "patch_size", in.read_size, p);
    }
  }
  td.commit();
  return static_cast<int64_t>(rows.size());
}

void write_clam_coords(const std::string& path, const int64_t* coords, int64_t n, int64_t patch_level,
                       int64_t patch_size) {
  quiet_hdf5();
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  try {
    H5 f(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    IPSNET_CHECK(f.ok(), "HDF5 cannot create '", tmp, "'");
    write_dataset(f.get(), "coords", H5T_STD_I64LE, H5T_NATIVE_INT64, coords, static_cast<hsize_t>(n), 2, path);
    H5 ds(H5Dopen2(f.get(), "coords", H5P_DEFAULT), H5Dclose);
    write_attr(ds.get(), "patch_level", patch_level, path);
    write_attr(ds.get(), "patch_size", patch_size, path);
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  fs::rename(tmp, path);
}

ClamCoords read_clam_coords(const std::string& path) {
  IPSNET_CHECK(fs::is_regular_file(path), "CLAM's coordinates file '", path, "' does not exist");
  H5 f = open_file(path);
  const std::string what = str_cat("CLAM's coordinates file '", path, "'");
  IPSNET_CHECK(H5Lexists(f.get(), "coords", H5P_DEFAULT) > 0, what, " has no dataset 'coords'");
  H5 ds(H5Dopen2(f.get(), "coords", H5P_DEFAULT), H5Dclose);
  IPSNET_CHECK(ds.ok(), "HDF5 cannot open the dataset 'coords' of ", what);
  H5 type(H5Dget_type(ds.get()), H5Tclose);
  IPSNET_CHECK(type.ok() && H5Tget_class(type.get()) == H5T_INTEGER, "the dataset 'coords' of ", what,
               " does not hold integers (expected int64 or int32 pixel coordinates)");
  ClamCoords c;
  IPSNET_CHECK(read_attr(ds.get(), "patch_level", &c.patch_level), what,
               " has no readable integer attribute 'patch_level' on 'coords'");
  IPSNET_CHECK(read_attr(ds.get(), "patch_size", &c.patch_size), what,
               " has no readable integer attribute 'patch_size' on 'coords'");
  IPSNET_CHECK(c.patch_level >= 0, what, ": patch_level ", c.patch_level, ", expected a level >= 0");
  IPSNET_CHECK(c.patch_size >= 1, what, ": patch_size ", c.patch_size, ", expected a positive number of pixels");
  hsize_t n = 0, two = 0;
  c.xy = read_dataset<int64_t>(f.get(), "coords", H5T_NATIVE_INT64, &n, &two, what);
  IPSNET_CHECK(two == 2, "the dataset 'coords' of ", what, " is (", n, ", ", two, "), expected (n, 2)");
  return c;
}

int64_t import_bags_h5(const std::string& in, const std::string& layout, const std::string& labels_csv,
                       const std::string& split, const std::string& out, bool force) {
  IPSNET_CHECK(layout == "ips" || layout == "clam", "layout '", layout, "' is not one of ips, clam");
  IPSNET_CHECK(split == "train" || split == "test", "split '", split, "' is not train or test");
  auto labels = read_labels(labels_csv);
  IPSNET_CHECK(layout == "ips" || !labels.empty(), "CLAM's feature files hold no labels: give a labels CSV "
               "(slide,label[,split])");
  TempDirectory td(out, force);
  fs::create_directories(td.path() + "/bags");
  std::string csv = "name,split,label,n,F,file\n";
  int64_t count = 0;
  auto add = [&](BagInfo info, const std::vector<float>& f, const std::vector<int64_t>& c) {
    auto it = labels.find(info.name);
    if (it != labels.end()) {
      info.label = it->second.label;
      if (!it->second.split.empty()) info.split = it->second.split;
    }
    if (info.split.empty()) info.split = split;
    write_bag(td.path() + "/bags/" + info.name + ".bag", info, f.data(), c.data());
    csv += str_cat(info.name, ",", info.split, ",", info.label, ",", info.n, ",", info.F, ",bags/", info.name, ".bag\n");
    ++count;
  };
  if (layout == "ips") {
    H5 f = open_file(in);
    H5G_info_t gi;
    IPSNET_CHECK(H5Gget_info(f.get(), &gi) >= 0, "HDF5 cannot list the groups of '", in, "'");
    for (hsize_t i = 0; i < gi.nlinks; ++i) {
      char name[1024];
      IPSNET_CHECK(H5Lget_name_by_idx(f.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT) > 0,
                   "HDF5 cannot read a group name of '", in, "'");
      H5 g(H5Gopen2(f.get(), name, H5P_DEFAULT), H5Gclose);
      const std::string what = str_cat("the group '", name, "' of '", in, "'");
      IPSNET_CHECK(g.ok(), "HDF5 cannot open ", what);
      hsize_t n = 0, F = 0, n2 = 0, two = 0;
      std::vector<float> feats = read_dataset<float>(g.get(), "img", H5T_NATIVE_FLOAT, &n, &F, what);
      std::vector<int64_t> pos = read_dataset<int64_t>(g.get(), "pos", H5T_NATIVE_INT64, &n2, &two, what);
      IPSNET_CHECK(n2 == n && two == 2, what, ": 'pos' is (", n2, ", ", two, "), expected (", n, ", 2)");
      BagInfo info;
      info.name = name;
      info.n = static_cast<int64_t>(n);
      info.F = static_cast<int64_t>(F);
      int64_t label = -1;
      if (read_attr(g.get(), "label", &label)) info.label = label;
      add(info, feats, pos);
    }
  } else {
    const std::string dir = in + "/h5_files";
    IPSNET_CHECK(fs::is_directory(dir), "'", in, "' has no h5_files/ directory (CLAM's features layout)");
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".h5") files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    for (const std::string& p : files) {
      H5 f = open_file(p);
      const std::string what = str_cat("'", p, "'");
      hsize_t n = 0, F = 0, n2 = 0, two = 0;
      std::vector<float> feats = read_dataset<float>(f.get(), "features", H5T_NATIVE_FLOAT, &n, &F, what);
      std::vector<int64_t> pos = read_dataset<int64_t>(f.get(), "coords", H5T_NATIVE_INT64, &n2, &two, what);
      IPSNET_CHECK(n2 == n && two == 2, what, ": 'coords' is (", n2, ", ", two, "), expected (", n, ", 2)");
      BagInfo info;
      info.name = fs::path(p).stem().string();
      info.n = static_cast<int64_t>(n);
      info.F = static_cast<int64_t>(F);
      // CLAM's coordinates file, when present, gives the level and tile size.
      const std::string cp = in + "/patches/" + info.name + ".h5";
      if (fs::is_regular_file(cp)) {
        H5 cf = open_file(cp);
        H5 ds(H5Dopen2(cf.get(), "coords", H5P_DEFAULT), H5Dclose);
        int64_t level = 0, size = 0;
        if (ds.ok() && read_attr(ds.get(), "patch_level", &level)) info.level = static_cast<int32_t>(level);
        if (ds.ok() && read_attr(ds.get(), "patch_size", &size)) info.read_size = info.out_size = size;
      }
      add(info, feats, pos);
    }
  }
  IPSNET_CHECK(count > 0, "'", in, "' holds no slides");
  write_file_atomic(td.path() + "/bags.csv", csv);
  td.commit();
  return count;
}

#else

bool have_hdf5() { return false; }
void write_clam_coords(const std::string&, const int64_t*, int64_t, int64_t, int64_t) {
  IPSNET_FAIL("this ipsnet was built without HDF5 (IPSNET_HDF5; apt-get install libhdf5-dev and reconfigure)");
}
ClamCoords read_clam_coords(const std::string&) {
  IPSNET_FAIL("this ipsnet was built without HDF5 (IPSNET_HDF5; apt-get install libhdf5-dev and reconfigure)");
}
int64_t export_bags_h5(const std::string&, const std::string&, const std::string&, bool) {
  IPSNET_FAIL("this ipsnet was built without HDF5 (IPSNET_HDF5; apt-get install libhdf5-dev and reconfigure)");
}
int64_t import_bags_h5(const std::string&, const std::string&, const std::string&, const std::string&,
                       const std::string&, bool) {
  IPSNET_FAIL("this ipsnet was built without HDF5 (IPSNET_HDF5; apt-get install libhdf5-dev and reconfigure)");
}

#endif

}  // namespace data
}  // namespace ipsnet

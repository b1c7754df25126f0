// Feature bags to and from the HDF5 layouts users already have (Debian's
// libhdf5, optional: IPSNET_HDF5), so that they keep their feature files:
//
//   ips   the IPS reference's: one HDF5 file, one group per slide holding the
//         datasets `img` (N x F float32) and `pos` (N x 2 int64, level-0 x, y)
//         and the attribute `label`;
//   clam  CLAM's: per slide, a features file OUT/h5_files/NAME.h5 with the
//         datasets `features` (N x F float32) and `coords` (N x 2 int64), and
//         a coordinates file OUT/patches/NAME.h5 with the dataset `coords`
//         whose attributes include `patch_level` and `patch_size`.
//
// Bags are ipsnet's own (data/bag_file.h, a directory with bags.csv).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ipsnet {
namespace data {

/// True when this ipsnet was built with libhdf5.
bool have_hdf5();

/// Writes the bags of `bags_dir` (every split) in `layout` to `out` (ips: a
/// file; clam: a directory). Written under temporary names, renamed into place.
/// Returns the number of slides written.
int64_t export_bags_h5(const std::string& bags_dir, const std::string& layout, const std::string& out, bool force);

/// Reads `in` (ips: a file; clam: a directory holding h5_files/) into a new
/// bags directory `out`. Labels and splits: the ips file's `label` attributes,
/// or labels_csv (`slide,label[,split]`, required for clam); slides without a
/// split get `split`. Throws one line naming the file on a missing dataset, a
/// shape mismatch or a file HDF5 cannot read.
int64_t import_bags_h5(const std::string& in, const std::string& layout, const std::string& labels_csv,
                       const std::string& split, const std::string& out, bool force);

/// Writes CLAM's coordinates file for one slide: the dataset `coords` (n x 2
/// int64, level-0 x, y) with the attributes `patch_level` and `patch_size`
/// (written under a temporary name, renamed into place).
void write_clam_coords(const std::string& path, const int64_t* coords, int64_t n, int64_t patch_level,
                       int64_t patch_size);

/// CLAM's coordinates file for one slide, as read_clam_coords returns it.
struct ClamCoords {
  std::vector<int64_t> xy;  // n x 2, level-0 x, y (top-left)
  int64_t patch_level = 0;  // the level CLAM cut the tiles at
  int64_t patch_size = 0;   // the tile side in pixels at patch_level
};
/// Reads CLAM's coordinates file (the dataset `coords`, n x 2 of any integer
/// type, with the attributes `patch_level` and `patch_size`). Throws one line
/// naming the file when it is missing, not HDF5, or lacks `coords` or either
/// attribute, or when `coords` is not n x 2 or patch_level < 0 or
/// patch_size < 1.
ClamCoords read_clam_coords(const std::string& path);

}  // namespace data
}  // namespace ipsnet

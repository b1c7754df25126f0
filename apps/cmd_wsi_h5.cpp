// `ipsnet bags-h5 export|import`: feature bags to and from the HDF5 layouts
// of the IPS reference and of CLAM (data/bag_hdf5.h).
#include <cstdio>
#include <string>
#include <vector>

#include "apps/args.h"
#include "apps/command.h"
#include "data/bag_hdf5.h"
#include "engine/common/error.h"

namespace ipsnet {
namespace app {
namespace {

int run_bags_h5(const std::vector<std::string>& args) {
  ArgParser p("bags-h5",
              "Convert feature bags to or from HDF5: the IPS reference's layout (one file, a group per slide with "
              "img, pos and the attribute label) or CLAM's (h5_files/NAME.h5 with features and coords, "
              "patches/NAME.h5 with coords and patch_level, patch_size).");
  p.add_positional("ACTION", "export (bags -> HDF5) or import (HDF5 -> bags)");
  p.add_positional("IN", "export: a bags directory; import: the ips file or the clam directory");
  p.add_positional("OUT", "export: the ips file or the clam directory; import: a new bags directory");
  p.add_option("layout", "ips", "ips | clam");
  p.add_option("labels", "", "import: CSV of slide,label[,split] (required for clam, overrides ips labels)");
  p.add_option("split", "train", "import: the split of slides the labels CSV gives none");
  p.add_flag("force", "replace an existing output");
  if (!p.parse(args)) return 0;
  const std::string action = p.positional(0), layout = p.get_string("layout");
  IPSNET_CHECK(action == "export" || action == "import", "ACTION '", action, "': expected export or import");
  IPSNET_CHECK(layout == "ips" || layout == "clam", "--layout ", layout, ": expected ips or clam");
  int64_t n = 0;
  if (action == "export") {
    n = data::export_bags_h5(p.positional(1), layout, p.positional(2), p.get_flag("force"));
  } else {
    n = data::import_bags_h5(p.positional(1), layout, p.get_string("labels"), p.get_string("split"),
                             p.positional(2), p.get_flag("force"));
  }
  std::printf("bags-h5: %s %lld slides (%s layout) -> %s\n", action == "export" ? "exported" : "imported",
              static_cast<long long>(n), layout.c_str(), p.positional(2).c_str());
  return 0;
}

CommandRegistrar reg("bags-h5", "feature bags to and from HDF5 (IPS reference and CLAM layouts)", run_bags_h5);

}  // namespace
}  // namespace app
}  // namespace ipsnet

// `ipsnet import-images`: a folder tree (one subfolder per class, optionally
// under train/ and test/) or a CSV (`path,label[,label2...]`, a header row
// naming the tasks, an optional `split` column) of PNG and JPEG files into a
// photograph dataset (data/photo_dataset.h), built in a TempDirectory.
// Every image is decoded once to validate it; JPEG bytes are kept as they
// are, PNGs as PNG bytes (interlaced ones re-encoded non-interlaced), unless
// --resize re-encodes them (PIL's bilinear, as torchvision's Resize).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "data/photo_dataset.h"

namespace ipsnet {
namespace data {

struct ImportImagesOptions {
  int64_t resize_h = 0, resize_w = 0;  ///< 0: keep the sizes
  int jpeg_quality = 95;               ///< re-encoded JPEGs (--resize)
  std::string split = "train";         ///< where images without a split go
  double test_fraction = 0.0;          ///< of each class (first task), drawn with `seed`, into test
  int64_t seed = 0;
  bool force = false;                  ///< replace an existing OUT
  int threads = 1;
  bool quiet = false;
  std::vector<std::pair<std::string, std::string>> extra_json;  ///< more parameters.json members (strings)
};

struct ImportImagesSummary {
  int64_t n_train = 0, n_test = 0;
  int channels = 0;
  int64_t jpeg = 0, png = 0;
  int64_t gray_as_rgb = 0;     ///< gray images in a colour set (read as RGB)
  int64_t palette = 0;         ///< PNG palettes (read as RGB)
  int64_t alpha_dropped = 0;   ///< alpha channels / transparency ignored
  int64_t reencoded = 0;       ///< resized, or interlaced PNGs stored non-interlaced
  int64_t progressive = 0;     ///< progressive JPEGs (kept; a lazy read holds their coefficients)
  int64_t skipped_files = 0;   ///< files in the tree that are not .png/.jpg/.jpeg
  int64_t bytes_in = 0, bytes_out = 0;
  std::string layout;          ///< "folders" | "folders with train/ and test/" | "csv"
  std::vector<std::string> tasks;
};

ImportImagesSummary import_images(const std::string& src, const std::string& out, const ImportImagesOptions& o);

/// One image to import: where to read it, its name in the dataset and in
/// errors (`display` + `where`, e.g. " (labels.csv row 7)"), its split and
/// its class per task.
struct ImportItem {
  std::string file, display, where, split;
  std::vector<int32_t> labels;
  std::string name() const { return "'" + display + "'" + where; }
};

/// The writing half of import_images (also used by import-traffic-signs):
/// validates, optionally resizes, and stores `items` with the given tasks
/// into OUT (a TempDirectory renamed into place). `layout` and `src` go to
/// parameters.json.
ImportImagesSummary write_photo_dataset(const std::vector<ImportItem>& items, const std::vector<PhotoTask>& tasks,
                                        const std::string& out, const ImportImagesOptions& o,
                                        const std::string& layout, const std::string& src);

/// Splits one CSV line (RFC 4180: quoted fields, "" inside quotes); throws
/// on an unterminated quote.
std::vector<std::string> split_csv_line(const std::string& line);

}  // namespace data
}  // namespace ipsnet

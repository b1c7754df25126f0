// The registered kinds of stored data, and the defaults of DataSource.
// A new kind: its own files, and one line in kKinds below.
#include <filesystem>

#include "data/bag_source.h"
#include "data/canvas_source.h"
#include "data/photo_source.h"
#include "data/slide_source.h"
#include "data/source.h"
#include "engine/common/error.h"

namespace ipsnet {
namespace data {

const std::vector<SourceKind>& source_kinds() {
  static const std::vector<SourceKind> kKinds = {
      {"canvas", "sparse grayscale canvases (`ipsnet generate-data`, `ipsnet import-npy`)", &CanvasSource::detect,
       &CanvasSource::open},
      {"photos", "compressed photographs (`ipsnet import-images`)", &PhotoSource::detect, &PhotoSource::open},
      {"bags", "feature bags of whole-slide images (`ipsnet extract-features`)", &BagSource::detect, &BagSource::open},
      {"slides", "tissue tiles read from whole-slide images through OpenSlide (`ipsnet wsi-tiles`)", &SlideSource::detect,
       &SlideSource::open},
  };
  return kKinds;
}

std::unique_ptr<DataSource> open_source(const std::string& dir, const std::string& split,
                                        const SourceOptions& options) {
  IPSNET_CHECK(std::filesystem::is_directory(dir), "dataset directory '", dir, "' does not exist");
  std::string known;
  for (const SourceKind& k : source_kinds()) {
    if (k.detect(dir)) return k.open(dir, split, options);
    known += str_cat(known.empty() ? "" : "; ", k.name, " (", k.what, ")");
  }
  IPSNET_FAIL("'", dir, "' holds no dataset ipsnet recognises; the kinds are: ", known);
}

namespace {
[[noreturn]] void no_pixels(const DataSource& s, const char* what) {
  IPSNET_FAIL("the ", s.kind(), " data source has no pixels (", what, " needs images)");
}
}  // namespace

PatchGrid DataSource::grid(int64_t) const { no_pixels(*this, "a patch grid"); }
void DataSource::read_image(int64_t, float*) const { no_pixels(*this, "reading a whole image"); }
std::pair<int64_t, int64_t> DataSource::lowres_size(int64_t) const {
  IPSNET_FAIL("the ", kind(), " data source has no low-resolution view");
}
void DataSource::read_lowres(int64_t, float*) const {
  IPSNET_FAIL("the ", kind(), " data source has no low-resolution view");
}

}  // namespace data
}  // namespace ipsnet

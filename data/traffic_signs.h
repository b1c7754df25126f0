// The Swedish Traffic Signs speed-limit task of the IPS paper (SPEC section
// 7), read with the reference implementation's rules:
//   layout   STS_DIR/Set1/ and STS_DIR/Set2/, each with the extracted JPEGs
//            (anywhere below the Set folder) and annotations.txt;
//   a line   FILE:SIGN;SIGN;... with SIGN = VISIBILITY, x1, y1, x2, y2, TYPE,
//            NAME (a coordinate with trailing junk is cut one character at a
//            time until it parses); MISC_SIGNS entries are dropped; a line
//            with no sign is an empty image;
//   label    EMPTY when the image has no sign; otherwise only 50_SIGN,
//            70_SIGN, 80_SIGN signs are kept, sorted by visibility (VISIBLE,
//            BLURRED, SIDE_ROAD, OCCLUDED) then larger box first; the image
//            is dropped when none remain or the first is not VISIBLE; the
//            label is the first sign's;
//   split    train = Set{1 + ((seed + 2) mod 2)}, test = Set{1 + ((seed + 1) mod 2)}.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ipsnet {
namespace data {

/// The classes, in label order.
const std::vector<std::string>& traffic_sign_classes();

struct TrafficSign {
  std::string visibility, type, name;
  double x1 = 0, y1 = 0, x2 = 0, y2 = 0;
};

struct TrafficImage {
  std::string file;                 ///< as named in annotations.txt
  int64_t line = 0;                 ///< 1-based line number
  std::vector<TrafficSign> signs;   ///< MISC_SIGNS dropped
};

/// Parses annotations text; `path` names the file in errors (one line with
/// the file and line number for a malformed line).
std::vector<TrafficImage> parse_sts_annotations(const std::string& text, const std::string& path);

/// The reference's label: 0 EMPTY, 1 50_SIGN, 2 70_SIGN, 3 80_SIGN, or -1
/// when the image is dropped.
int traffic_label(const TrafficImage& image);

/// "Set1" | "Set2": the folder the reference reads for a split and seed.
std::string sts_set_for(const std::string& split, int64_t seed);

/// MD5 of bytes, lowercase hex (to compare annotations.txt with the originals).
std::string md5_hex(const std::string& bytes);
/// The original annotations' MD5s (Set1, Set2).
extern const char* const kStsAnnotationsMd5[2];

}  // namespace data
}  // namespace ipsnet

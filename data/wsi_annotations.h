// Lesion annotations of whole-slide images in ASAP's XML format (the format
// of CAMELYON16's lesion_annotations/*.xml), and the polygon geometry the
// tiler needs. Coordinates are level-0 pixels (x to the right, y down).
//
// ASAP's file:
//   <ASAP_Annotations><Annotations>
//     <Annotation Name="_0" Type="Polygon" PartOfGroup="Tumor" Color="#F4FA58">
//       <Coordinates><Coordinate Order="0" X="1.5" Y="2.5" />...</Coordinates>
//     </Annotation>...
//   </Annotations><AnnotationGroups>...</AnnotationGroups></ASAP_Annotations>
// CAMELYON16 marks tumour regions with the groups "Tumor", "_0", "_1" and
// regions to exclude inside them with "Exclusion" or "_2".
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ipsnet {
namespace data {

struct Polygon {
  std::string name;   // the Annotation's Name
  std::string group;  // its PartOfGroup
  std::vector<double> x, y;  // vertices in order (level-0 pixels); closed implicitly
  /// CAMELYON16's exclusion groups ("Exclusion", "_2"): not tumour.
  bool exclusion() const { return group == "Exclusion" || group == "_2"; }
};

/// The polygons of an ASAP XML file. Throws one line naming the file, the
/// line and what was expected on malformed XML or a missing coordinate.
std::vector<Polygon> read_asap_xml(const std::string& path);
/// Parses ASAP XML text (what read_asap_xml does after reading the file;
/// `what` names the source in errors).
std::vector<Polygon> parse_asap_xml(const std::string& text, const std::string& what);
/// ASAP XML text for the polygons (groups listed in AnnotationGroups).
std::string asap_xml(const std::vector<Polygon>& polygons);

/// Even-odd point-in-polygon test.
bool polygon_contains(const Polygon& p, double x, double y);
/// True when the polygon and the axis-aligned rectangle [x0, x1) x [y0, y1)
/// overlap (a vertex inside the rectangle, a corner inside the polygon, or
/// crossing edges).
bool polygon_intersects_rect(const Polygon& p, double x0, double y0, double x1, double y1);

}  // namespace data
}  // namespace ipsnet

// ASAP XML annotations: a small XML reader sufficient for ASAP's files
// (elements, attributes, comments, declarations, the five predefined
// entities), checking that every element closes in order, and the polygon
// geometry used to keep tiles that touch a tumour.
#include "data/wsi_annotations.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "engine/common/error.h"

namespace ipsnet {
namespace data {

namespace {

struct XmlTag {
  std::string name;
  std::map<std::string, std::string> attrs;
  bool closing = false;       // </name>
  bool self_closing = false;  // <name ... />
  int line = 0;
};

// A pull reader over XML text: next() yields the tags in order and skips text,
// comments, declarations and processing instructions.
class XmlReader {
 public:
  XmlReader(const std::string& text, const std::string& what) : s_(text), what_(what) {}

  bool next(XmlTag& tag) {
    for (;;) {
      size_t lt = s_.find('<', pos_);
      if (lt == std::string::npos) return false;
      advance_to(lt);
      if (starts_with("<!--")) {
        size_t e = s_.find("-->", pos_ + 4);
        if (e == std::string::npos) fail("an unterminated comment");
        advance_to(e + 3);
        continue;
      }
      if (starts_with("<?")) {
        size_t e = s_.find("?>", pos_ + 2);
        if (e == std::string::npos) fail("an unterminated '<?' declaration");
        advance_to(e + 2);
        continue;
      }
      if (starts_with("<![CDATA[")) {
        size_t e = s_.find("]]>", pos_);
        if (e == std::string::npos) fail("an unterminated CDATA section");
        advance_to(e + 3);
        continue;
      }
      if (starts_with("<!")) {  // DOCTYPE
        size_t e = s_.find('>', pos_);
        if (e == std::string::npos) fail("an unterminated '<!' declaration");
        advance_to(e + 1);
        continue;
      }
      read_tag(tag);
      return true;
    }
  }

  [[noreturn]] void fail(const std::string& found) const {
    IPSNET_FAIL(what_, ": malformed XML at line ", line_, ": ", found);
  }
  int line() const { return line_; }

 private:
  bool starts_with(const char* p) const { return s_.compare(pos_, std::char_traits<char>::length(p), p) == 0; }
  void advance_to(size_t p) {
    for (size_t i = pos_; i < p && i < s_.size(); ++i)
      if (s_[i] == '\n') ++line_;
    pos_ = p;
  }
  static bool name_char(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' || c == ':';
  }
  void skip_space() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) advance_to(pos_ + 1);
  }
  std::string read_name(const char* what) {
    size_t b = pos_;
    while (pos_ < s_.size() && name_char(s_[pos_])) ++pos_;
    if (pos_ == b) fail(str_cat("expected ", what, ", found ", found_here(b)));
    return s_.substr(b, pos_ - b);
  }
  std::string found_here(size_t p) const {
    if (p >= s_.size()) return "the end of the file";
    return str_cat("'", s_.substr(p, std::min<size_t>(12, s_.size() - p)), "'");
  }
  std::string decode(const std::string& v) const {
    std::string out;
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i] != '&') {
        out += v[i];
        continue;
      }
      size_t e = v.find(';', i);
      if (e == std::string::npos) fail(str_cat("an unterminated entity in the value '", v, "'"));
      std::string ent = v.substr(i + 1, e - i - 1);
      if (ent == "amp") out += '&';
      else if (ent == "lt") out += '<';
      else if (ent == "gt") out += '>';
      else if (ent == "quot") out += '"';
      else if (ent == "apos") out += '\'';
      else if (!ent.empty() && ent[0] == '#') {
        long c = ent.size() > 1 && (ent[1] == 'x' || ent[1] == 'X') ? std::strtol(ent.c_str() + 2, nullptr, 16)
                                                                    : std::strtol(ent.c_str() + 1, nullptr, 10);
        out += c > 0 && c < 128 ? static_cast<char>(c) : '?';
      } else {
        fail(str_cat("an unknown entity '&", ent, ";'"));
      }
      i = e;
    }
    return out;
  }
  void read_tag(XmlTag& tag) {
    tag = XmlTag();
    tag.line = line_;
    advance_to(pos_ + 1);  // '<'
    if (pos_ < s_.size() && s_[pos_] == '/') {
      tag.closing = true;
      advance_to(pos_ + 1);
    }
    tag.name = read_name("an element name after '<'");
    for (;;) {
      skip_space();
      if (pos_ >= s_.size()) fail(str_cat("the element <", tag.name, "> is not closed by '>'"));
      char c = s_[pos_];
      if (c == '>') {
        advance_to(pos_ + 1);
        return;
      }
      if (c == '/' && !tag.closing && pos_ + 1 < s_.size() && s_[pos_ + 1] == '>') {
        tag.self_closing = true;
        advance_to(pos_ + 2);
        return;
      }
      if (tag.closing) fail(str_cat("expected '>' after </", tag.name, ", found ", found_here(pos_)));
      std::string key = read_name(str_cat("an attribute name or '>' in <", tag.name, ">").c_str());
      skip_space();
      if (pos_ >= s_.size() || s_[pos_] != '=')
        fail(str_cat("expected '=' after the attribute ", key, " of <", tag.name, ">, found ", found_here(pos_)));
      advance_to(pos_ + 1);
      skip_space();
      if (pos_ >= s_.size() || (s_[pos_] != '"' && s_[pos_] != '\''))
        fail(str_cat("expected a quoted value for the attribute ", key, " of <", tag.name, ">, found ",
                     found_here(pos_)));
      char q = s_[pos_];
      size_t e = s_.find(q, pos_ + 1);
      if (e == std::string::npos) fail(str_cat("the value of the attribute ", key, " is not closed"));
      std::string raw = s_.substr(pos_ + 1, e - pos_ - 1);
      if (raw.find('<') != std::string::npos)
        fail(str_cat("'<' inside the value of the attribute ", key, " of <", tag.name, ">"));
      tag.attrs[key] = decode(raw);
      advance_to(e + 1);
    }
  }

  const std::string& s_;
  std::string what_;
  size_t pos_ = 0;
  int line_ = 1;
};

double parse_coord(const XmlReader& r, const XmlTag& t, const char* key) {
  auto it = t.attrs.find(key);
  if (it == t.attrs.end()) r.fail(str_cat("<Coordinate> without the attribute ", key));
  // ASAP writes '.' decimals; some exports use ',' as the decimal separator.
  std::string v = it->second;
  std::replace(v.begin(), v.end(), ',', '.');
  char* end = nullptr;
  double d = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !std::isfinite(d))
    r.fail(str_cat("the coordinate ", key, "=\"", it->second, "\" is not a number"));
  return d;
}

}  // namespace

std::vector<Polygon> parse_asap_xml(const std::string& text, const std::string& what) {
  XmlReader r(text, what);
  XmlTag t;
  std::vector<std::string> open;
  std::vector<Polygon> out;
  bool in_annotation = false, seen_root = false;
  std::vector<std::pair<int64_t, std::pair<double, double>>> coords;  // (Order, (x, y))
  while (r.next(t)) {
    if (t.closing) {
      if (open.empty() || open.back() != t.name)
        r.fail(str_cat("</", t.name, "> closes ", open.empty() ? std::string("nothing") : "<" + open.back() + ">"));
      open.pop_back();
      if (t.name == "Annotation" && in_annotation) {
        std::stable_sort(coords.begin(), coords.end(),
                         [](const auto& a, const auto& b) { return a.first < b.first; });
        for (const auto& c : coords) {
          out.back().x.push_back(c.second.first);
          out.back().y.push_back(c.second.second);
        }
        coords.clear();
        in_annotation = false;
      }
      continue;
    }
    if (open.empty()) {
      if (seen_root) r.fail(str_cat("a second root element <", t.name, ">"));
      if (t.name != "ASAP_Annotations")
        r.fail(str_cat("the root element is <", t.name, ">, expected <ASAP_Annotations>"));
      seen_root = true;
    }
    if (t.name == "Annotation") {
      Polygon p;
      p.name = t.attrs.count("Name") ? t.attrs.at("Name") : "";
      p.group = t.attrs.count("PartOfGroup") ? t.attrs.at("PartOfGroup") : "";
      out.push_back(p);
      in_annotation = !t.self_closing;
    } else if (t.name == "Coordinate") {
      if (!in_annotation) r.fail("<Coordinate> outside an <Annotation>");
      int64_t order = static_cast<int64_t>(coords.size());
      if (t.attrs.count("Order")) {
        char* end = nullptr;
        order = std::strtoll(t.attrs.at("Order").c_str(), &end, 10);
        if (*end != '\0') r.fail(str_cat("the Order \"", t.attrs.at("Order"), "\" is not an integer"));
      }
      coords.push_back({order, {parse_coord(r, t, "X"), parse_coord(r, t, "Y")}});
    }
    if (!t.self_closing) open.push_back(t.name);
  }
  if (!seen_root) r.fail("no <ASAP_Annotations> element");
  if (!open.empty()) r.fail(str_cat("the file ends inside <", open.back(), ">"));
  // Points and segments are not regions; keep polygons with an area.
  out.erase(std::remove_if(out.begin(), out.end(), [](const Polygon& p) { return p.x.size() < 3; }), out.end());
  return out;
}

std::vector<Polygon> read_asap_xml(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  IPSNET_CHECK(in.good(), "cannot open the annotation file '", path, "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_asap_xml(ss.str(), path);
}

namespace {
std::string xml_escape(const std::string& v) {
  std::string out;
  for (char c : v) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += c;
    }
  }
  return out;
}
}  // namespace

std::string asap_xml(const std::vector<Polygon>& polygons) {
  std::ostringstream os;
  os.precision(10);
  os << "<?xml version=\"1.0\"?>\n<ASAP_Annotations>\n\t<Annotations>\n";
  std::vector<std::string> groups;
  for (const Polygon& p : polygons) {
    if (std::find(groups.begin(), groups.end(), p.group) == groups.end()) groups.push_back(p.group);
    os << "\t\t<Annotation Name=\"" << xml_escape(p.name) << "\" Type=\"Polygon\" PartOfGroup=\"" << xml_escape(p.group)
       << "\" Color=\"#F4FA58\">\n\t\t\t<Coordinates>\n";
    for (size_t i = 0; i < p.x.size(); ++i)
      os << "\t\t\t\t<Coordinate Order=\"" << i << "\" X=\"" << p.x[i] << "\" Y=\"" << p.y[i] << "\" />\n";
    os << "\t\t\t</Coordinates>\n\t\t</Annotation>\n";
  }
  os << "\t</Annotations>\n\t<AnnotationGroups>\n";
  for (const std::string& g : groups)
    os << "\t\t<Group Name=\"" << xml_escape(g) << "\" PartOfGroup=\"None\" Color=\"#ff0000\">\n\t\t\t<Attributes />\n\t\t</Group>\n";
  os << "\t</AnnotationGroups>\n</ASAP_Annotations>\n";
  return os.str();
}

bool polygon_contains(const Polygon& p, double x, double y) {
  bool in = false;
  const size_t n = p.x.size();
  for (size_t i = 0, j = n - 1; i < n; j = i++) {
    if ((p.y[i] > y) != (p.y[j] > y)) {
      double xc = p.x[j] + (y - p.y[j]) * (p.x[i] - p.x[j]) / (p.y[i] - p.y[j]);
      if (x < xc) in = !in;
    }
  }
  return in;
}

namespace {
double cross(double ax, double ay, double bx, double by, double cx, double cy) {
  return (bx - ax) * (cy - ay) - (by - ay) * (cx - ax);
}
bool segments_cross(double ax, double ay, double bx, double by, double cx, double cy, double dx, double dy) {
  double d1 = cross(cx, cy, dx, dy, ax, ay), d2 = cross(cx, cy, dx, dy, bx, by);
  double d3 = cross(ax, ay, bx, by, cx, cy), d4 = cross(ax, ay, bx, by, dx, dy);
  return ((d1 > 0 && d2 < 0) || (d1 < 0 && d2 > 0)) && ((d3 > 0 && d4 < 0) || (d3 < 0 && d4 > 0));
}
}  // namespace

bool polygon_intersects_rect(const Polygon& p, double x0, double y0, double x1, double y1) {
  const size_t n = p.x.size();
  if (n < 3) return false;
  for (size_t i = 0; i < n; ++i)
    if (p.x[i] >= x0 && p.x[i] < x1 && p.y[i] >= y0 && p.y[i] < y1) return true;
  if (polygon_contains(p, 0.5 * (x0 + x1), 0.5 * (y0 + y1)) || polygon_contains(p, x0, y0)) return true;
  const double rx[4] = {x0, x1, x1, x0}, ry[4] = {y0, y0, y1, y1};
  for (size_t i = 0, j = n - 1; i < n; j = i++)
    for (int k = 0; k < 4; ++k)
      if (segments_cross(p.x[j], p.y[j], p.x[i], p.y[i], rx[k], ry[k], rx[(k + 1) % 4], ry[(k + 1) % 4]))
        return true;
  return false;
}

}  // namespace data
}  // namespace ipsnet

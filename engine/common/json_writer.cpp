#include "engine/common/json_writer.h"

#include <cmath>
#include <cstdio>

#include "engine/common/error.h"

namespace ipsnet {

std::string json_quote(const std::string& s) {
  std::string o;
  o.reserve(s.size() + 2);
  o += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\n': o += "\\n"; break;
      case '\r': o += "\\r"; break;
      case '\t': o += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          o += buf;
        } else {
          o += static_cast<char>(c);
        }
    }
  }
  o += '"';
  return o;
}

void JsonWriter::newline(size_t depth) {
  if (indent_ <= 0) return;
  out_ += '\n';
  out_.append(depth * static_cast<size_t>(indent_), ' ');
}

void JsonWriter::before_value() {
  if (stack_.empty()) {
    IPSNET_CHECK(out_.empty(), "JsonWriter: a JSON text holds one top-level value");
    return;
  }
  Level& top = stack_.back();
  if (top.bracket == '{') {
    IPSNET_CHECK(have_key_, "JsonWriter: a value inside an object needs a key first");
    have_key_ = false;
    return;
  }
  if (!top.empty) out_ += ',';
  top.empty = false;
  newline(stack_.size());
}

JsonWriter& JsonWriter::key(const std::string& k) {
  IPSNET_CHECK(!stack_.empty() && stack_.back().bracket == '{', "JsonWriter: key '", k, "' outside an object");
  IPSNET_CHECK(!have_key_, "JsonWriter: key '", k, "' follows a key without a value");
  Level& top = stack_.back();
  if (!top.empty) out_ += ',';
  top.empty = false;
  newline(stack_.size());
  out_ += json_quote(k);
  out_ += indent_ > 0 ? ": " : ":";
  have_key_ = true;
  return *this;
}

void JsonWriter::open(char bracket) {
  before_value();
  out_ += bracket;
  stack_.push_back({bracket});
}

void JsonWriter::close(char bracket) {
  IPSNET_CHECK(!stack_.empty() && stack_.back().bracket == bracket, "JsonWriter: '",
               bracket == '{' ? '}' : ']', "' does not close the innermost container");
  IPSNET_CHECK(!have_key_, "JsonWriter: the object ends after a key without a value");
  bool empty = stack_.back().empty;
  stack_.pop_back();
  if (!empty) newline(stack_.size());
  out_ += bracket == '{' ? '}' : ']';
}

JsonWriter& JsonWriter::begin_object() {
  open('{');
  return *this;
}
JsonWriter& JsonWriter::end_object() {
  close('{');
  return *this;
}
JsonWriter& JsonWriter::begin_array() {
  open('[');
  return *this;
}
JsonWriter& JsonWriter::end_array() {
  close('[');
  return *this;
}

JsonWriter& JsonWriter::raw(const std::string& text) {
  before_value();
  out_ += text;
  return *this;
}

JsonWriter& JsonWriter::value(const std::string& s) { return raw(json_quote(s)); }

JsonWriter& JsonWriter::value(bool b) { return raw(b ? "true" : "false"); }

JsonWriter& JsonWriter::value(double d) {
  IPSNET_CHECK(std::isfinite(d), "JsonWriter: ", d, " is not a JSON number");
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", d);
  return raw(buf);
}

const std::string& JsonWriter::str() const {
  IPSNET_CHECK(stack_.empty() && !have_key_, "JsonWriter: ", stack_.size(), " container(s) left open");
  return out_;
}

}  // namespace ipsnet

// A small JSON text writer for the files ipsnet writes (parameters.json,
// safetensors headers): objects, arrays, strings with escapes, numbers and
// booleans, compact or indented. It checks the nesting (a value in an object
// needs a key first; every container is closed before str()).
#pragma once
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

namespace ipsnet {

/// `s` as a quoted JSON string: '"' and '\\' escaped, \n \r \t as such,
/// other control characters as \u00XX; other bytes (UTF-8) unchanged.
std::string json_quote(const std::string& s);

/// Builds JSON text. indent 0 writes compact text (`{"a":1,"b":[1,2]}`);
/// indent > 0 puts every member and element on its own line, indented by
/// `indent` spaces per level, with `": "` after keys (`json.dumps(indent=2)`).
class JsonWriter {
 public:
  explicit JsonWriter(int indent = 0) : indent_(indent) {}

  JsonWriter& begin_object();
  JsonWriter& end_object();
  JsonWriter& begin_array();
  JsonWriter& end_array();
  /// The key of the next value (inside an object only).
  JsonWriter& key(const std::string& k);

  JsonWriter& value(const std::string& s);
  JsonWriter& value(const char* s) { return value(std::string(s)); }
  JsonWriter& value(bool b);
  /// %.17g, which reads back to the same double; NaN and infinities are refused.
  JsonWriter& value(double d);
  template <typename T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
  JsonWriter& value(T v) {
    return raw(std::to_string(v));
  }
  /// key(k).value(v).
  template <typename T>
  JsonWriter& member(const std::string& k, const T& v) {
    return key(k).value(v);
  }

  /// The text written so far; every container must be closed.
  const std::string& str() const;

 private:
  JsonWriter& raw(const std::string& text);  // a scalar value
  void before_value();
  void open(char bracket);
  void close(char bracket);
  void newline(size_t depth);

  struct Level {
    char bracket;  // '{' or '['
    bool empty = true;
  };
  int indent_;
  std::string out_;
  std::vector<Level> stack_;
  bool have_key_ = false;
};

}  // namespace ipsnet

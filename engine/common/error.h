// ipsnet: errors and checks.
// Every user-visible failure throws ipsnet::Error whose message names the
// failed condition, the offending values, and function + file:line.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace ipsnet {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

namespace detail {
inline void stream_all(std::ostringstream&) {}
template <typename T, typename... Rest>
void stream_all(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  stream_all(os, rest...);
}
template <typename... Args>
[[noreturn]] void throw_error(const char* func, const char* file, int line, const Args&... args) {
  std::ostringstream os;
  stream_all(os, args...);
  os << " [" << func << " at " << file << ":" << line << "]";
  throw Error(os.str());
}
}  // namespace detail

/// Concatenates any streamable arguments into a string.
template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  detail::stream_all(os, args...);
  return os.str();
}

}  // namespace ipsnet

/// Throws ipsnet::Error with the streamed message when cond is false.
#define IPSNET_CHECK(cond, ...)                                                   \
  do {                                                                            \
    if (!(cond)) ::ipsnet::detail::throw_error(__func__, __FILE__, __LINE__, __VA_ARGS__); \
  } while (0)

/// Throws ipsnet::Error unconditionally.
#define IPSNET_FAIL(...) ::ipsnet::detail::throw_error(__func__, __FILE__, __LINE__, __VA_ARGS__)

// Progress display with rate and ETA: a redrawn bar on a terminal, plain
// periodic lines otherwise.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace ipsnet {
namespace train {

class Progress {
 public:
  /// total: units of work (images); label printed before the bar.
  Progress(std::string label, int64_t total, bool enabled = true);
  /// Adds done units; `extra` is appended (e.g. "loss 1.23").
  void update(int64_t done, const std::string& extra = "");
  /// Final line (always printed when enabled).
  void finish(const std::string& extra = "");
  double elapsed() const;
  /// "1:02:03" / "02:03"
  static std::string format_duration(double seconds);

 private:
  void draw(bool final, const std::string& extra);
  std::string label_;
  int64_t total_, done_ = 0;
  bool enabled_, tty_;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace train
}  // namespace ipsnet

#include "train/progress.h"

#include <unistd.h>

#include <cstdio>

namespace ipsnet {
namespace train {

Progress::Progress(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled), tty_(isatty(2) != 0) {
  start_ = last_ = std::chrono::steady_clock::now();
}

double Progress::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string Progress::format_duration(double s) {
  if (s < 0 || s > 1e7) return "--:--";
  int64_t t = static_cast<int64_t>(s + 0.5);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", static_cast<long long>(t / 3600),
                  static_cast<long long>(t / 60 % 60), static_cast<long long>(t % 60));
  else
    std::snprintf(buf, sizeof(buf), "%02lld:%02lld", static_cast<long long>(t / 60), static_cast<long long>(t % 60));
  return buf;
}

void Progress::update(int64_t done, const std::string& extra) {
  done_ += done;
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_).count();
  if (since < (tty_ ? 0.2 : 10.0)) return;
  last_ = now;
  draw(false, extra);
}

void Progress::finish(const std::string& extra) {
  if (!enabled_) return;
  draw(true, extra);
}

void Progress::draw(bool final, const std::string& extra) {
  double t = elapsed();
  double rate = t > 0 ? done_ / t : 0;
  double eta = rate > 0 ? (total_ - done_) / rate : -1;
  char line[512];
  if (tty_) {
    const int width = 24;
    int fill = total_ > 0 ? static_cast<int>(width * done_ / total_) : width;
    std::string bar(static_cast<size_t>(fill), '#');
    bar.resize(width, '.');
    std::snprintf(line, sizeof(line), "\r%s [%s] %lld/%lld %.1f img/s %s %s %s", label_.c_str(), bar.c_str(),
                  static_cast<long long>(done_), static_cast<long long>(total_), rate,
                  final ? "in" : "ETA", format_duration(final ? t : eta).c_str(), extra.c_str());
    std::fprintf(stderr, "%s\033[K%s", line, final ? "\n" : "");
  } else {
    std::snprintf(line, sizeof(line), "%s %lld/%lld %.1f img/s %s %s %s\n", label_.c_str(),
                  static_cast<long long>(done_), static_cast<long long>(total_), rate, final ? "took" : "ETA",
                  format_duration(final ? t : eta).c_str(), extra.c_str());
    std::fputs(line, stderr);
  }
  std::fflush(stderr);
}

}  // namespace train
}  // namespace ipsnet

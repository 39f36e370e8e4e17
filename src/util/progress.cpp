#include "util/progress.h"

#include <unistd.h>

#include <cstdio>

namespace meshtrain::util {

Progress::Progress(int64_t total_steps)
    : total_(total_steps), tty_(::isatty(STDERR_FILENO) == 1) {}

void Progress::update(int64_t step, const std::string& line, bool log) {
  if (log) last_line_ = line;
  if (!tty_) {
    if (log) std::fprintf(stderr, "%s\n", line.c_str());
    return;
  }
  constexpr int kWidth = 30;
  const int filled = total_ > 0 ? static_cast<int>(kWidth * step / total_) : kWidth;
  std::string bar(filled, '#');
  bar.resize(kWidth, '.');
  std::fprintf(stderr, "\r\033[K[%s] %lld/%lld %s", bar.c_str(), static_cast<long long>(step),
               static_cast<long long>(total_), last_line_.c_str());
  if (log) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

void Progress::finish() {
  if (tty_) std::fprintf(stderr, "\n");
}

}  // namespace meshtrain::util

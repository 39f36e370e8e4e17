// Training progress on stderr: a redrawn bar when stderr is a terminal, plain lines otherwise
// (one per logging step), so logs and CI output stay readable.
#pragma once
#include <cstdint>
#include <string>

namespace meshtrain::util {

class Progress {
 public:
  explicit Progress(int64_t total_steps);
  // Redraws the bar (terminal) each step; `line` is printed as a plain line when log is true.
  void update(int64_t step, const std::string& line, bool log);
  void finish();

 private:
  int64_t total_;
  bool tty_;
  std::string last_line_;
};

}  // namespace meshtrain::util

#include "util/error_text.h"

#include <sstream>

namespace meshtrain::util {

std::string without_stack_frames(const std::string& message) {
  std::istringstream in(message);
  std::string line, out;
  while (std::getline(in, line)) {
    const auto text = line.substr(line.find_first_not_of(' ') == std::string::npos ? line.size()
                                                                                   : line.find_first_not_of(' '));
    if (text.starts_with("frame #") || text.starts_with("Exception raised from") || text.empty()) continue;
    out += (out.empty() ? "" : " ") + text;
  }
  return out;
}

}  // namespace meshtrain::util

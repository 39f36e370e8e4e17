// Error messages as users see them: libtorch's C++ stack traces ("Exception raised from ...",
// "frame #N: ...") cut away unless asked for.
#pragma once
#include <string>

namespace meshtrain::util {

std::string without_stack_frames(const std::string& message);

}  // namespace meshtrain::util

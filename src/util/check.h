// Errors: every failure is a meshtrain::Error whose message carries the offending values.
// MT_CHECK(cond, parts...) streams its parts into that message.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace meshtrain {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Bad command-line usage: the CLI exits with code 2 instead of 1.
struct UsageError : Error {
  using Error::Error;
};

template <typename... Parts>
std::string str_cat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

template <typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  throw Error(str_cat(parts...));
}

}  // namespace meshtrain

#define MT_CHECK(cond, ...)                 \
  do {                                      \
    if (!(cond)) ::meshtrain::fail(__VA_ARGS__); \
  } while (0)

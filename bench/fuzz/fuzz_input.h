// What every fuzz target shares: the input as a file (the parsers read paths, as they do in a
// run), in a per-process directory on tmpfs, and the rule that a meshtrain::Error is a correct
// answer to bad input while anything else (a crash, a sanitizer report, another exception) is not.
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "util/check.h"

namespace meshtrain::fuzz {

inline std::filesystem::path work_dir() {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::path(std::filesystem::exists("/dev/shm") ? "/dev/shm" : "/tmp") /
             ("meshtrain-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

inline std::filesystem::path write_input(const std::string& name, const uint8_t* data, size_t size) {
  auto path = work_dir() / name;
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data), size);
  return path;
}

template <typename Body>
int accept_errors(Body&& body) {
  try {
    body();
  } catch (const meshtrain::Error&) {
  }
  return 0;
}

}  // namespace meshtrain::fuzz

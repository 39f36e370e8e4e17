// The header of a NumPy .npy file (format versions 1.0, 2.0, 3.0): magic, version, and the
// Python dict literal with 'descr', 'fortran_order' and 'shape'. Parsing checks only syntax;
// what a token dataset accepts is decided by the caller.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace meshtrain::data {

struct NpyHeader {
  int major_version = 0;
  int minor_version = 0;
  std::string descr;           // e.g. "<u2", "|u1"
  bool fortran_order = false;
  std::vector<int64_t> shape;  // () for a scalar
  size_t data_offset = 0;      // first byte of the array data
};

// `path` is only used in error messages.
NpyHeader parse_npy_header(std::span<const std::byte> file, const std::filesystem::path& path);

}  // namespace meshtrain::data

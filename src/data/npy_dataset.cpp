// .npy token arrays: a 1-D little-endian integer array, memory-mapped in place. Accepted dtypes
// are i1 u1 i2 u2 i4 u4 i8 u8 with byte order '<', '|' or '=' (native, little on every host
// we build for); big-endian, non-integer, multi-dimensional and truncated arrays are errors.
#include <memory>

#include "data/mapped_tokens.h"
#include "data/npy_header.h"
#include "data/token_formats.h"
#include "util/check.h"

namespace meshtrain::data {

namespace {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    s += std::to_string(shape[i]);
    if (shape.size() == 1 || i + 1 < shape.size()) s += ",";
    if (i + 1 < shape.size()) s += " ";
  }
  return s + ")";
}

TokenLayout layout_of(const std::string& descr, const std::filesystem::path& path) {
  const char* supported = " (supported: i1 u1 i2 u2 i4 u4 i8 u8, little-endian '<' or '|')";
  MT_CHECK(descr.size() == 3, path, ": .npy dtype '", descr, "' is not an integer dtype",
           supported);
  const char order = descr[0], kind = descr[1], size = descr[2];
  MT_CHECK(order == '<' || order == '>' || order == '|' || order == '=', path,
           ": .npy dtype '", descr, "' has an unknown byte order '", order, "'");
  MT_CHECK(kind == 'i' || kind == 'u', path, ": .npy dtype '", descr,
           "' is not an integer dtype", supported);
  MT_CHECK(size == '1' || size == '2' || size == '4' || size == '8', path, ": .npy dtype '",
           descr, "' has an unsupported item size", supported);
  TokenLayout layout{size - '0', kind == 'i'};
  MT_CHECK(order != '>' || layout.width == 1, path, ": .npy dtype '", descr,
           "' is big-endian; only little-endian arrays are read", supported);
  return layout;
}

}  // namespace

std::unique_ptr<TokenDataset> open_npy_dataset(const std::filesystem::path& path) {
  auto file = std::make_unique<util::MappedFile>(path);
  const NpyHeader h = parse_npy_header(file->bytes(), path);
  MT_CHECK(!(h.fortran_order && h.shape.size() > 1), path,
           ": .npy array is fortran_order=True with shape ", shape_str(h.shape),
           "; token arrays must be 1-D in C order");
  MT_CHECK(h.shape.size() == 1, path, ": .npy array has shape ", shape_str(h.shape),
           " (", h.shape.size(), "-D); token arrays must be 1-D");
  const TokenLayout layout = layout_of(h.descr, path);
  const int64_t n = h.shape[0];
  MT_CHECK(n > 0, path, ": token dataset is empty (.npy shape ", shape_str(h.shape), ")");
  const size_t available = file->size() - h.data_offset;
  MT_CHECK(static_cast<uint64_t>(n) <= available / static_cast<size_t>(layout.width), path,
           ": .npy data is truncated: shape ", shape_str(h.shape), " of '", h.descr, "' needs ",
           n, " x ", layout.width, " bytes but only ", available, " follow the header");
  return std::make_unique<MappedTokens>(std::move(file), h.data_offset, n, layout);
}

}  // namespace meshtrain::data

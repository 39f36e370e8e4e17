// safetensors reader and writer. Every offset in the header is checked against the mapped file
// at open, so read() and read_slice() only ever memcpy inside bytes the file really holds.
#include "io/safetensors.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "util/check.h"
#include "util/files.h"
#include "util/mapped_file.h"

namespace meshtrain::io {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host would need byte swapping");

namespace {

using nlohmann::json;

// The Rust safetensors library refuses headers above this size; so do we.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DtypeName {
  const char* name;
  at::ScalarType dtype;
};
constexpr DtypeName kDtypes[] = {
    {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16},
    {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
    {"U8", at::kByte},    {"BOOL", at::kBool},
};

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// A non-negative JSON integer; floats, strings, booleans and negatives give nullopt.
std::optional<uint64_t> as_u64(const json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
  return std::nullopt;
}

uint64_t nbytes_of(at::ScalarType dtype, const std::vector<int64_t>& shape) {
  uint64_t n = c10::elementSize(dtype);
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

uint64_t nbytes_of(const at::Tensor& t) {
  return static_cast<uint64_t>(t.numel()) * c10::elementSize(t.scalar_type());
}

}  // namespace

at::ScalarType dtype_from_name(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return d.dtype;
  fail("unknown safetensors dtype \"", name, "\" (known: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
}

std::string dtype_name(at::ScalarType dtype) {
  for (const auto& d : kDtypes)
    if (dtype == d.dtype) return d.name;
  fail("dtype ", c10::toString(dtype),
       " cannot be stored in safetensors (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
}

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path)
    : file_(std::make_unique<util::MappedFile>(path)) {
  const std::string where = str_cat("safetensors file ", path, ": ");
  const auto bytes = file_->bytes();
  const uint64_t size = bytes.size();
  MT_CHECK(size >= 8, where, "too short: ", size, " bytes, but the header length alone takes 8");

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | std::to_integer<uint64_t>(bytes[i]);
  MT_CHECK(header_len <= kMaxHeaderBytes, where, "header length ", header_len,
           " bytes is larger than the limit of ", kMaxHeaderBytes, " bytes");
  MT_CHECK(header_len <= size - 8, where, "header length ", header_len,
           " bytes runs past the end of the file (", size, " bytes, ", size - 8,
           " after the length field)");
  data_start_ = 8 + header_len;
  const uint64_t data_size = size - data_start_;

  const char* header_begin = reinterpret_cast<const char*>(bytes.data()) + 8;
  json header;
  try {
    header = json::parse(header_begin, header_begin + header_len);
  } catch (const json::exception& e) {
    fail(where, "header is not valid JSON: ", e.what());
  }
  MT_CHECK(header.is_object(), where, "header is not a JSON object but a JSON ", header.type_name());

  struct Range {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Range> ranges;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      MT_CHECK(entry.is_object(), where, "__metadata__ is a JSON ", entry.type_name(),
               ", not an object of strings");
      for (const auto& [key, value] : entry.items()) {
        MT_CHECK(value.is_string(), where, "__metadata__ value of \"", key, "\" is a JSON ",
                 value.type_name(), ", not a string");
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string at_tensor = str_cat(where, "tensor \"", name, "\": ");
    MT_CHECK(entry.is_object(), at_tensor, "entry is a JSON ", entry.type_name(), ", not an object");
    for (const char* key : {"dtype", "shape", "data_offsets"})
      MT_CHECK(entry.contains(key), at_tensor, "missing \"", key, "\" in ", entry.dump());

    TensorInfo info;
    const json& dtype = entry["dtype"];
    MT_CHECK(dtype.is_string(), at_tensor, "dtype is a JSON ", dtype.type_name(), " (", dtype.dump(),
             "), not a string");
    try {
      info.dtype = dtype_from_name(dtype.get<std::string>());
    } catch (const Error& e) {
      fail(at_tensor, e.what());
    }

    const json& shape = entry["shape"];
    MT_CHECK(shape.is_array(), at_tensor, "shape ", shape.dump(), " is not an array of integers");
    int64_t numel = 1;
    for (const json& d : shape) {
      MT_CHECK(d.is_number_integer(), at_tensor, "shape ", shape.dump(), " holds ", d.dump(),
               ", not an integer");
      MT_CHECK(d.is_number_unsigned() || d.get<int64_t>() >= 0, at_tensor, "shape ", shape.dump(),
               " has a negative dimension ", d.dump());
      const uint64_t dim = *as_u64(d);
      MT_CHECK(dim <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) &&
                   !__builtin_mul_overflow(numel, static_cast<int64_t>(dim), &numel),
               at_tensor, "element count of shape ", shape.dump(), " overflows 64 bits");
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    const uint64_t elem = c10::elementSize(info.dtype);
    uint64_t nbytes = 0;
    MT_CHECK(!__builtin_mul_overflow(static_cast<uint64_t>(numel), elem, &nbytes), at_tensor,
             "byte count of shape ", shape.dump(), " overflows 64 bits");

    const json& offsets = entry["data_offsets"];
    MT_CHECK(offsets.is_array() && offsets.size() == 2 && as_u64(offsets[0]) && as_u64(offsets[1]),
             at_tensor, "data_offsets ", offsets.dump(), " is not [begin, end] of non-negative integers");
    info.begin = *as_u64(offsets[0]);
    info.end = *as_u64(offsets[1]);
    MT_CHECK(info.begin <= info.end, at_tensor, "data_offsets begin ", info.begin, " > end ",
             info.end);
    MT_CHECK(info.end <= data_size, at_tensor, "data_offsets end ", info.end,
             " is past the end of the data section (", data_size, " bytes)");
    MT_CHECK(info.end - info.begin == nbytes, at_tensor, "data_offsets [", info.begin, ", ",
             info.end, "] span ", info.end - info.begin, " bytes, but ", dtype_name(info.dtype),
             " of shape ", shape_str(info.shape), " needs ", numel, " x ", elem, " = ", nbytes);
    auto [it, inserted] = tensors_.emplace(name, std::move(info));
    if (nbytes > 0) ranges.push_back({it->second.begin, it->second.end, &it->first});
  }

  // Sorted by begin, a range overlaps an earlier one iff it starts before the furthest end so far.
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.begin < b.begin; });
  for (size_t i = 1, furthest = 0; i < ranges.size(); ++i) {
    const Range& prev = ranges[furthest];
    MT_CHECK(ranges[i].begin >= prev.end, where, "tensors \"", *prev.name, "\" [", prev.begin, ", ",
             prev.end, ") and \"", *ranges[i].name, "\" [", ranges[i].begin, ", ", ranges[i].end,
             ") overlap in the data section");
    if (ranges[i].end > prev.end) furthest = i;
  }
}

SafetensorsFile::~SafetensorsFile() = default;

const std::filesystem::path& SafetensorsFile::path() const { return file_->path(); }

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& [name, info] : tensors_) out.push_back(name);
  return out;
}

bool SafetensorsFile::contains(const std::string& name) const { return tensors_.count(name) > 0; }

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = tensors_.find(name);
  MT_CHECK(it != tensors_.end(), "no tensor \"", name, "\" in safetensors file ", path(), " (",
           tensors_.size(), " tensors)");
  return it->second;
}

at::Tensor SafetensorsFile::read(const std::string& name) const {
  const TensorInfo& ti = info(name);
  at::Tensor out = at::empty(ti.shape, at::TensorOptions().dtype(ti.dtype));
  const uint64_t n = ti.end - ti.begin;
  if (n > 0) std::memcpy(out.data_ptr(), file_->bytes().data() + data_start_ + ti.begin, n);
  bytes_read_ += n;
  return out;
}

at::Tensor SafetensorsFile::read_slice(const std::string& name, int64_t dim, int64_t start,
                                       int64_t length) const {
  const TensorInfo& ti = info(name);
  const auto ndim = static_cast<int64_t>(ti.shape.size());
  MT_CHECK(dim >= 0 && dim < ndim, "read_slice of \"", name, "\" in ", path(), ": dim ", dim,
           " is out of range for shape ", shape_str(ti.shape));
  const int64_t extent = ti.shape[dim];
  MT_CHECK(start >= 0 && length >= 0 && start <= extent && length <= extent - start,
           "read_slice of \"", name, "\" in ", path(), ": [start ", start, ", length ", length,
           "] does not fit dim ", dim, " of size ", extent, " (shape ", shape_str(ti.shape), ")");

  // Viewed as [outer, extent, inner]: copy rows [start, start + length) of every outer block.
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= ti.shape[d];
  for (int64_t d = dim + 1; d < ndim; ++d) inner *= ti.shape[d];
  const uint64_t row_bytes = static_cast<uint64_t>(inner) * c10::elementSize(ti.dtype);
  const uint64_t block_bytes = row_bytes * static_cast<uint64_t>(extent);
  const uint64_t chunk = row_bytes * static_cast<uint64_t>(length);

  std::vector<int64_t> out_shape = ti.shape;
  out_shape[dim] = length;
  at::Tensor out = at::empty(out_shape, at::TensorOptions().dtype(ti.dtype));
  if (chunk > 0) {
    const std::byte* src =
        file_->bytes().data() + data_start_ + ti.begin + row_bytes * static_cast<uint64_t>(start);
    auto* dst = static_cast<std::byte*>(out.data_ptr());
    for (int64_t o = 0; o < outer; ++o) std::memcpy(dst + o * chunk, src + o * block_bytes, chunk);
  }
  bytes_read_ += chunk * static_cast<uint64_t>(outer);
  return out;
}

std::vector<TensorSpec> specs_of(const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  std::vector<TensorSpec> specs;
  for (const auto& [name, t] : tensors) {
    MT_CHECK(t.defined(), "cannot save undefined tensor \"", name, "\"");
    specs.push_back({name, t.scalar_type(), t.sizes().vec()});
  }
  return specs;
}

void save_safetensors(const std::filesystem::path& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  save_safetensors(path, specs_of(tensors), [&](size_t i) { return tensors[i].second; }, metadata);
}

void save_safetensors(const std::filesystem::path& path, const std::vector<TensorSpec>& specs,
                      const TensorSource& source, const std::map<std::string, std::string>& metadata) {
  // Header first, from dtypes and shapes alone, so the data can be streamed one tensor at a time.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& [name, dtype, shape] : specs) {
    MT_CHECK(name != "__metadata__", "cannot save a tensor named \"__metadata__\" to ", path);
    MT_CHECK(seen.insert(name).second, "tensor name \"", name, "\" appears twice in the save to ",
             path);
    const uint64_t n = nbytes_of(dtype, shape);
    header[name] = {{"dtype", dtype_name(dtype)},
                    {"shape", shape},
                    {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail("cannot write safetensors header for ", path, " (names and metadata must be UTF-8): ",
         e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // data section starts 8-byte aligned

  auto tmp = path;
  tmp += ".tmp";
  try {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    MT_CHECK(out, "cannot open ", tmp, " for writing: ", util::errno_message(errno));
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(text.size() >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (size_t i = 0; i < specs.size(); ++i) {
      const auto& name = specs[i].name;
      const at::Tensor c = source(i).detach().to(at::kCPU).contiguous();
      MT_CHECK(c.scalar_type() == specs[i].dtype && c.sizes().vec() == specs[i].shape, "tensor \"", name,
               "\" is ", dtype_name(c.scalar_type()), " ", c.sizes(), " but its spec says ",
               dtype_name(specs[i].dtype), " ", at::IntArrayRef(specs[i].shape));
      const uint64_t n = nbytes_of(c);
      if (n > 0) out.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(n));
      MT_CHECK(out, "cannot write ", tmp, " (tensor \"", name, "\", ", n, " bytes): ", util::errno_message(errno));
    }
    out.flush();
    MT_CHECK(out, "cannot write ", tmp, ": ", util::errno_message(errno));
    out.close();
    util::sync_path(tmp);
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    MT_CHECK(!ec, "cannot rename ", tmp, " to ", path, ": ", ec.message());
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw;
  }
  util::sync_path(path.has_parent_path() ? path.parent_path() : std::filesystem::path("."));
}

}  // namespace meshtrain::io

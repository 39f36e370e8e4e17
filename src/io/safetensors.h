// safetensors files: a validated, memory-mapped reader that can read a slice of a tensor
// without touching the rest, and a writer. A file that lies about its layout (header past the
// end, offsets out of range or overlapping, byte counts that disagree with dtype and shape) is
// rejected when opened, so no read can leave the mapped bytes.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace meshtrain::util { class MappedFile; }

namespace meshtrain::io {

struct TensorInfo {
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;
};

// "F32" <-> at::kFloat, ... (F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL); unknown names throw.
at::ScalarType dtype_from_name(const std::string& name);
std::string dtype_name(at::ScalarType dtype);

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);
  ~SafetensorsFile();

  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // An owned, contiguous CPU copy in the stored dtype.
  at::Tensor read(const std::string& name) const;
  // Elements [start, start + length) along dim; only those bytes are read.
  at::Tensor read_slice(const std::string& name, int64_t dim, int64_t start, int64_t length) const;
  // Bytes copied out of the file so far (tensor-parallel loading reads about 1/tp of them).
  uint64_t bytes_read() const { return bytes_read_; }
  const std::filesystem::path& path() const;

 private:
  std::unique_ptr<util::MappedFile> file_;
  uint64_t data_start_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
  mutable uint64_t bytes_read_ = 0;
};

// What a tensor to be written will be; its bytes come later from a TensorSource.
struct TensorSpec {
  std::string name;
  at::ScalarType dtype;
  std::vector<int64_t> shape;
};
// Produces tensor i of the spec list; called once per tensor, in order, so a caller can gather
// each tensor just before it is written and drop it after.
using TensorSource = std::function<at::Tensor(size_t index)>;

// Writes tensors (any device / layout; stored contiguous, in their dtype) in the given order,
// atomically (temporary name, then rename). metadata defaults to {"format": "pt"}.
void save_safetensors(const std::filesystem::path& path, const std::vector<TensorSpec>& specs,
                      const TensorSource& source,
                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});
void save_safetensors(const std::filesystem::path& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

std::vector<TensorSpec> specs_of(const std::vector<std::pair<std::string, at::Tensor>>& tensors);

}  // namespace meshtrain::io

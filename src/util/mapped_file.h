// A read-only memory map of a whole file. Readers index into bytes() after checking bounds
// against size(); nothing is copied until a caller copies it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>

namespace meshtrain::util {

class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const std::byte> bytes() const { return {data_, size_}; }
  size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace meshtrain::util

// Streams token ids to a file the token datasets read: llm.c .bin (version 1, uint16, when every
// id fits; else version 2, uint32) or .npy (1-D '<u2' or '<u4'). The header's count is written
// when the stream is finished; the file appears under its name only then (renamed into place).
#pragma once
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <vector>

namespace meshtrain::data {

class TokenWriter {
 public:
  // `vocab_size` decides the width (uint16 when every id is below 65536). An extension other
  // than .bin or .npy is an error.
  TokenWriter(const std::filesystem::path& path, int64_t vocab_size);
  ~TokenWriter();
  TokenWriter(const TokenWriter&) = delete;
  TokenWriter& operator=(const TokenWriter&) = delete;

  void write(const std::vector<int32_t>& ids);
  // Writes the header and renames the file into place; returns the token count.
  int64_t finish();
  int width() const { return width_; }

 private:
  std::string header(int64_t count) const;
  std::filesystem::path path_, partial_;
  std::FILE* file_ = nullptr;
  bool npy_;
  int width_;
  int64_t count_ = 0;
  std::vector<char> buffer_;
};

}  // namespace meshtrain::data

// A token dataset read in place from a memory-mapped file: `count` little-endian integers of
// `width` bytes (signed or not) starting at byte `offset`. Invariant: offset + count * width
// <= file size and count > 0; nothing is copied until read_into().
#pragma once
#include <cstdint>
#include <memory>

#include "data/token_dataset.h"
#include "util/mapped_file.h"

namespace meshtrain::data {

struct TokenLayout {
  int width = 1;  // bytes per token: 1, 2, 4 or 8
  bool is_signed = false;
};

class MappedTokens : public TokenDataset {
 public:
  MappedTokens(std::unique_ptr<util::MappedFile> file, size_t offset, int64_t count,
               TokenLayout layout);

  int64_t size() const override { return count_; }
  void read_into(int64_t start, int64_t length, int64_t* out) const override;

 private:
  std::unique_ptr<util::MappedFile> file_;
  size_t offset_;
  int64_t count_;
  TokenLayout layout_;
};

}  // namespace meshtrain::data

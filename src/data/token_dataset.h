// Token datasets: one 1-D sequence of token ids from a .npy, llm.c .bin, .txt or .jsonl file
// (the last two through the byte tokenizer), memory-mapped where the format allows; malformed
// files are rejected with the path and the value (docs/files.md).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <memory>

namespace meshtrain::data {

class TokenDataset {
 public:
  virtual ~TokenDataset() = default;
  virtual int64_t size() const = 0;  // number of tokens, > 0
  // Writes tokens [start, start + length) to out[0, length); the caller has checked the range.
  virtual void read_into(int64_t start, int64_t length, int64_t* out) const = 0;
  // tokens [start, start + length) as an int64 tensor; a range outside [0, size()) is an error
  at::Tensor slice(int64_t start, int64_t length) const;
  int64_t min_token() const;  // smallest id (scans the data once, cached; not thread-safe)
  int64_t max_token() const;  // largest id (the same scan)
  // Throws unless every id is in [0, vocab_size), naming the offending one.
  void check_ids(int64_t vocab_size) const;

 private:
  void scan() const;
  mutable int64_t min_token_ = 0, max_token_ = -1;
  mutable bool scanned_ = false;
};

// Opens by extension (.npy, .bin, .txt, .jsonl); anything else is an error naming those.
std::unique_ptr<TokenDataset> open_token_dataset(const std::filesystem::path& path);

}  // namespace meshtrain::data

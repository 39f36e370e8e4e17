// Token datasets: one 1-D sequence of token ids read from a file, chosen by extension:
//   .npy   1-D integer array (little-endian i1/u1/i2/u2/i4/u4/i8/u8, C order), memory-mapped
//   .bin   llm.c token shard: 256 int32 header (magic 20240520, version 1, token count), uint16
//          tokens (version 2: uint32), memory-mapped
//   .txt   raw bytes through the byte tokenizer (vocab 256), memory-mapped (token = byte value)
//   .jsonl one JSON object per line; its "text" field through the byte tokenizer, documents
//          joined end to end with no separator (the byte vocabulary has no EOS id; put "\n" in
//          the text to separate documents)
// Malformed or empty files are rejected with the path and the offending value.
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
  int64_t max_token() const;  // largest id (scans the data once, cached; not thread-safe)

 private:
  mutable int64_t max_token_ = -1;
  mutable bool max_token_known_ = false;
};

// Opens by extension (.npy, .bin, .txt, .jsonl); anything else is an error naming those.
std::unique_ptr<TokenDataset> open_token_dataset(const std::filesystem::path& path);

}  // namespace meshtrain::data

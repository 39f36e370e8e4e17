// Documents packed into training windows, as TRL's --packing and HF's DataCollatorWithFlattening
// do: each document of the token stream (a run of tokens ending with EOS) goes whole into one
// window of seq_len tokens, best-fit decreasing (longest first, each into the fullest window it
// fits); a document longer than seq_len is split into pieces of at most seq_len (and counted).
// The rest of a window is padding. A window carries position_ids that restart at 0 for every
// document and targets that never cross a document boundary; padding has no targets.
#pragma once
#include <cstdint>
#include <vector>

#include "data/token_dataset.h"

namespace meshtrain::data {

class PackedDocuments {
 public:
  // Fails with the numbers when seq_len < 2 or eos_token_id is negative.
  PackedDocuments(const TokenDataset& data, int64_t seq_len, int64_t eos_token_id);

  int64_t num_windows() const { return static_cast<int64_t>(window_begin_.size()) - 1; }
  int64_t seq_len() const { return seq_len_; }
  int64_t documents() const { return documents_; }
  int64_t split_documents() const { return split_; }  // documents longer than seq_len
  int64_t tokens() const { return tokens_; }           // data tokens in all windows (no padding)

  // Window w into three arrays of seq_len: token ids (padding: EOS), position_ids, and the shifted
  // targets (nn::kIgnoreIndex, -100, at each document's last token and on padding).
  void read(int64_t window, int64_t* input_ids, int64_t* position_ids, int64_t* targets) const;

 private:
  struct Piece {
    int64_t start, length;  // tokens [start, start + length) of the data
  };
  const TokenDataset& data_;
  int64_t seq_len_, eos_;
  int64_t documents_ = 0, split_ = 0, tokens_ = 0;
  std::vector<Piece> pieces_;          // window after window
  std::vector<int64_t> window_begin_;  // window w holds pieces_[window_begin_[w], window_begin_[w + 1])
};

}  // namespace meshtrain::data

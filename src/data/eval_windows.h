// Evaluation windows: the dataset's consecutive, non-overlapping seq_len windows in file order
// (no shuffling), the same cut WindowSampler uses, so eval and train see identical windows.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

#include "data/token_dataset.h"

namespace meshtrain::data {

// Number of whole windows: size / seq_len (seq_len >= 2).
int64_t num_consecutive_windows(const TokenDataset& dataset, int64_t seq_len);
// int64 [count, seq_len]: row r holds tokens [(first + r) * seq_len, (first + r + 1) * seq_len).
at::Tensor consecutive_windows(const TokenDataset& dataset, int64_t seq_len, int64_t first,
                               int64_t count);

}  // namespace meshtrain::data

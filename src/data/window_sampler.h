// Training windows: consecutive seq_len windows (or the windows of packed documents) visited
// epoch by epoch in an order that depends only on (seed, epoch), so the k-th window of the stream
// is a pure function of k and a run resumes exactly (docs/files.md). Not thread-safe; the dataset
// (or the packing) must outlive it.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "data/document_packing.h"
#include "data/token_dataset.h"

namespace meshtrain::data {

// Rows of packed windows: ids, position_ids and targets, each [count, seq_len] int64.
struct PackedBatch {
  at::Tensor input_ids, position_ids, targets;
};

class WindowSampler {
 public:
  WindowSampler(const TokenDataset& dataset, int64_t seq_len, uint64_t seed);
  WindowSampler(const PackedDocuments& packed, uint64_t seed);

  int64_t num_windows() const { return num_windows_; }
  bool packed() const { return packed_ != nullptr; }
  int64_t seq_len() const { return seq_len_; }
  // Window index (into the dataset) of stream position k >= 0.
  int64_t window_at(int64_t k) const;
  // input_ids [count, seq_len] (int64) for stream positions [first, first + count).
  at::Tensor batch(int64_t first, int64_t count) const;
  // The same positions of packed windows (the sampler must have been made from a packing).
  PackedBatch packed_batch(int64_t first, int64_t count) const;

 private:
  const std::vector<int64_t>& order_of_epoch(int64_t epoch) const;

  const TokenDataset* dataset_ = nullptr;
  const PackedDocuments* packed_ = nullptr;
  int64_t seq_len_;
  uint64_t seed_;
  int64_t num_windows_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> cached_order_;
};

}  // namespace meshtrain::data

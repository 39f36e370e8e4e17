// The endless, resumable window stream: position k -> (epoch k / N, slot k % N) -> window
// order_of_epoch(epoch)[slot], where each epoch's order is seeded_permutation(N, seed, epoch).
#include "data/window_sampler.h"

#include "data/permutation.h"
#include "util/check.h"

namespace meshtrain::data {

WindowSampler::WindowSampler(const TokenDataset& dataset, int64_t seq_len, uint64_t seed)
    : dataset_(&dataset), seq_len_(seq_len), seed_(seed), num_windows_(0) {
  MT_CHECK(seq_len_ >= 2, "seq_len must be >= 2 (inputs and a shifted label), got ", seq_len_);
  num_windows_ = dataset.size() / seq_len_;
  MT_CHECK(num_windows_ > 0, "dataset of ", dataset.size(),
           " tokens is shorter than one window of seq_len ", seq_len_);
}

WindowSampler::WindowSampler(const PackedDocuments& packed, uint64_t seed)
    : packed_(&packed), seq_len_(packed.seq_len()), seed_(seed), num_windows_(packed.num_windows()) {}

const std::vector<int64_t>& WindowSampler::order_of_epoch(int64_t epoch) const {
  if (epoch != cached_epoch_) {
    cached_order_ = seeded_permutation(num_windows_, seed_, static_cast<uint64_t>(epoch));
    cached_epoch_ = epoch;
  }
  return cached_order_;
}

int64_t WindowSampler::window_at(int64_t k) const {
  MT_CHECK(k >= 0, "stream position must be >= 0, got ", k);
  return order_of_epoch(k / num_windows_)[static_cast<size_t>(k % num_windows_)];
}

at::Tensor WindowSampler::batch(int64_t first, int64_t count) const {
  MT_CHECK(first >= 0 && count >= 0, "batch needs first >= 0 and count >= 0, got first=", first,
           " count=", count);
  MT_CHECK(dataset_, "this sampler reads packed windows: use packed_batch");
  at::Tensor out = at::empty({count, seq_len_}, at::kLong);
  int64_t* dst = out.data_ptr<int64_t>();
  for (int64_t r = 0; r < count; ++r) {
    dataset_->read_into(window_at(first + r) * seq_len_, seq_len_, dst + r * seq_len_);
  }
  return out;
}

PackedBatch WindowSampler::packed_batch(int64_t first, int64_t count) const {
  MT_CHECK(packed_, "this sampler reads plain windows: use batch");
  MT_CHECK(first >= 0 && count >= 0, "batch needs first >= 0 and count >= 0, got first=", first, " count=", count);
  PackedBatch out{at::empty({count, seq_len_}, at::kLong), at::empty({count, seq_len_}, at::kLong),
                  at::empty({count, seq_len_}, at::kLong)};
  for (int64_t r = 0; r < count; ++r)
    packed_->read(window_at(first + r), out.input_ids[r].data_ptr<int64_t>(), out.position_ids[r].data_ptr<int64_t>(),
                  out.targets[r].data_ptr<int64_t>());
  return out;
}

}  // namespace meshtrain::data

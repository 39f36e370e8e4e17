// Consecutive windows in file order for evaluation; see eval_windows.h.
#include "data/eval_windows.h"

#include "util/check.h"

namespace meshtrain::data {

int64_t num_consecutive_windows(const TokenDataset& dataset, int64_t seq_len) {
  MT_CHECK(seq_len >= 2, "seq_len must be >= 2 (inputs and a shifted label), got ", seq_len);
  return dataset.size() / seq_len;
}

at::Tensor consecutive_windows(const TokenDataset& dataset, int64_t seq_len, int64_t first,
                               int64_t count) {
  const int64_t n = num_consecutive_windows(dataset, seq_len);
  MT_CHECK(first >= 0 && count >= 0 && first <= n && count <= n - first, "windows [", first,
           ", ", first + count, ") are outside the ", n, " windows of seq_len ", seq_len, " in ",
           dataset.size(), " tokens");
  at::Tensor out = at::empty({count, seq_len}, at::kLong);
  if (count > 0) dataset.read_into(first * seq_len, count * seq_len, out.data_ptr<int64_t>());
  return out;
}

}  // namespace meshtrain::data

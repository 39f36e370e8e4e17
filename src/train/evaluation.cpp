#include "train/evaluation.h"

#include <algorithm>
#include <cmath>

#include "data/eval_windows.h"
#include "dist/device_mesh.h"
#include "nn/causal_lm_loss.h"
#include "parallel/step_loss.h"
#include "util/check.h"

namespace meshtrain::train {

namespace {

int64_t windows_of(const data::TokenDataset& dataset, int64_t seq_len) {
  const int64_t windows = data::num_consecutive_windows(dataset, seq_len);
  MT_CHECK(windows >= 1, "the eval data holds ", dataset.size(), " tokens, fewer than one window of seq_len ", seq_len);
  return windows;
}

}  // namespace

double EvalResult::perplexity() const { return std::exp(loss); }

void check_eval_data(const data::TokenDataset& dataset, int64_t seq_len, int64_t vocab_size) {
  windows_of(dataset, seq_len);
  dataset.check_ids(vocab_size);
}

EvalResult evaluate(parallel::ParallelModel& model, const data::TokenDataset& dataset, int64_t seq_len, int64_t batch) {
  MT_CHECK(batch >= 1, "the eval batch size must be positive, got ", batch);
  const int64_t windows = windows_of(dataset, seq_len);
  // Every rank runs the same number of forwards (sharded layers communicate inside them); a
  // data-parallel rank past the last batch runs one whose targets are all ignored.
  auto& dp = model.mesh().group(MeshDim::Dp);
  const int64_t batches = (windows + batch - 1) / batch;
  const int64_t rounds = (batches + dp.size() - 1) / dp.size();
  std::vector<parallel::MicroBatch> mine;
  for (int64_t round = 0; round < rounds; ++round) {
    const int64_t b = round * dp.size() + dp.rank();
    const bool real = b < batches;
    const int64_t first = real ? b * batch : 0;
    auto ids = data::consecutive_windows(dataset, seq_len, first, std::min(batch, windows - first));
    mine.push_back({ids, real ? nn::shift_labels(ids) : at::full_like(ids, nn::kIgnoreIndex)});
  }
  at::NoGradGuard no_grad;
  const auto loss = parallel::step_loss(model, mine, parallel::Pass::Forward);
  return {loss.mean(), loss.targets};
}

}  // namespace meshtrain::train

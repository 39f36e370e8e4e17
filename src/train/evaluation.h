// The token-weighted loss of a model over a dataset's consecutive windows, on any mesh: what
// `meshtrain eval` prints and what training logs as eval_loss every --eval_steps.
#pragma once
#include <cstdint>

#include "data/token_dataset.h"
#include "parallel/parallelize.h"

namespace meshtrain::train {

struct EvalResult {
  double loss = 0.0;   // mean over every target of every window
  int64_t tokens = 0;  // targets counted
  double perplexity() const;
};

// Throws unless the dataset holds at least one window and its ids fit the vocabulary.
void check_eval_data(const data::TokenDataset& dataset, int64_t seq_len, int64_t vocab_size);

// Every window once, `batch` windows per forward on each data-parallel rank; collective over
// the model's mesh. A dataset shorter than one window is an error.
EvalResult evaluate(parallel::ParallelModel& model, const data::TokenDataset& dataset, int64_t seq_len, int64_t batch);

}  // namespace meshtrain::train

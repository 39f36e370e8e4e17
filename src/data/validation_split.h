// Hugging Face run_clm's --validation_split_percentage: the first P% of a dataset's consecutive
// windows are held out for evaluation and training reads the rest, so the split depends only on
// the data, the window length and P.
#pragma once
#include <cstdint>
#include <memory>

#include "data/token_dataset.h"

namespace meshtrain::data {

struct ValidationSplit {
  std::unique_ptr<TokenDataset> train, eval;  // views of the dataset, which must outlive them
};

// floor(windows · P / 100) windows go to eval; 0 < P < 100, and both parts need a window.
ValidationSplit split_validation(const TokenDataset& dataset, int64_t seq_len, double percentage);

}  // namespace meshtrain::data

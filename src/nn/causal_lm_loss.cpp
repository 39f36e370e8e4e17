#include "nn/causal_lm_loss.h"

namespace meshtrain::nn {

at::Tensor shift_labels(const at::Tensor& labels) {
  auto pad = at::full({labels.size(0), 1}, kIgnoreIndex, labels.options());
  return at::cat({labels.slice(1, 1), pad}, 1);
}

int64_t count_targets(const at::Tensor& targets) { return targets.ne(kIgnoreIndex).sum().item<int64_t>(); }

at::Tensor cross_entropy_sum(const at::Tensor& logits, const at::Tensor& targets) {
  auto flat = logits.to(at::kFloat).reshape({-1, logits.size(-1)});
  return at::cross_entropy_loss(flat, targets.reshape({-1}), /*weight=*/{}, at::Reduction::Sum,
                                kIgnoreIndex);
}

}  // namespace meshtrain::nn

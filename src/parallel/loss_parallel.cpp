#include "parallel/loss_parallel.h"

#include <torch/csrc/autograd/custom_function.h>

#include <limits>

#include "dist/collectives.h"
#include "nn/causal_lm_loss.h"

namespace meshtrain::parallel {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct VocabParallelCrossEntropy : torch::autograd::Function<VocabParallelCrossEntropy> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& targets,
                            dist::Group* g, int64_t vocab_offset) {
    const int64_t local_vocab = logits.size(-1);
    auto flat = logits.to(at::kFloat).reshape({targets.numel(), local_vocab});
    auto flat_targets = targets.reshape({-1});
    const auto valid = flat_targets.ne(nn::kIgnoreIndex);
    // Max over the whole vocab for a stable exp; an empty shard contributes -inf.
    auto max = local_vocab > 0 ? std::get<0>(flat.max(1))
                               : at::full({flat.size(0)}, -std::numeric_limits<float>::infinity(), flat.options());
    dist::all_reduce_(*g, max, c10d::ReduceOp::MAX);
    auto exp = (flat - max.unsqueeze(1)).exp();
    auto sum_exp = exp.sum(1);
    // The target's logit, from the rank whose rows hold it (zero elsewhere).
    auto local_target = flat_targets - vocab_offset;
    auto mine = valid.logical_and(local_target >= 0).logical_and(local_target < local_vocab);
    auto index = local_target.masked_fill(mine.logical_not(), 0).unsqueeze(1);
    auto target_logit = local_vocab > 0 ? flat.gather(1, index).squeeze(1).masked_fill(mine.logical_not(), 0.0)
                                        : at::zeros_like(max);
    auto both = at::stack({sum_exp, target_logit});
    dist::all_reduce_(*g, both);
    auto per_token = (both[0].log() + max - both[1]).masked_fill(valid.logical_not(), 0.0);
    ctx->save_for_backward({exp / both[0].unsqueeze(1), index, mine, valid});
    ctx->saved_data["shape"] = logits.sizes().vec();
    ctx->saved_data["dtype"] = static_cast<int64_t>(logits.scalar_type());
    return per_token.sum();
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    auto saved = ctx->get_saved_variables();
    auto softmax = saved[0], index = saved[1], mine = saved[2], valid = saved[3];
    // d(-log p_t)/d logit_v = softmax_v - [v == t], for the targets that count.
    auto g = softmax.clone();
    if (g.size(1) > 0) g.scatter_add_(1, index, -mine.to(g.scalar_type()).unsqueeze(1));
    g.mul_(valid.to(g.scalar_type()).unsqueeze(1)).mul_(grad[0]);
    auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    return {g.view(ctx->saved_data["shape"].toIntVector()).to(dtype), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor vocab_parallel_cross_entropy_sum(const at::Tensor& logits, const at::Tensor& targets, dist::Group& tp,
                                            int64_t vocab_offset) {
  return VocabParallelCrossEntropy::apply(logits, targets, &tp, vocab_offset);
}

}  // namespace meshtrain::parallel

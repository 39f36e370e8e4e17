// Vocab-parallel cross entropy (Megatron's): the logits stay sharded over the vocab on tp, so no
// rank holds the full [B, T, V]. The log-sum-exp comes from an all-reduced max and sum of
// exponentials, the target logit from the rank that owns it; the gradient, softmax minus the
// one-hot target, is computed on each shard with no communication.
#pragma once
#include <ATen/ATen.h>

#include "dist/group.h"

namespace meshtrain::parallel {

// logits [B, T, V_local] holding vocab rows [vocab_offset, vocab_offset + V_local) of this tp
// rank, targets [B, T] (already shifted, ignore_index -100). Returns the fp32 sum of
// -log p(target) over the targets that count, equal on every tp rank; 0 when none count.
at::Tensor vocab_parallel_cross_entropy_sum(const at::Tensor& logits, const at::Tensor& targets, dist::Group& tp,
                                            int64_t vocab_offset);

}  // namespace meshtrain::parallel

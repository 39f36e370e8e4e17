// The causal-LM loss as Hugging Face's ForCausalLMLoss computes it: labels shifted left by
// one (the last position gets ignore_index -100), logits upcast to fp32, cross entropy summed
// over the non-ignored targets. Callers divide the sum by the target count of the whole step,
// so the loss is token-weighted however the step is split into micro-batches or shards.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

namespace meshtrain::nn {

constexpr int64_t kIgnoreIndex = -100;

// labels [B, T] -> targets [B, T]: targets[:, t] = labels[:, t + 1], targets[:, T-1] = -100.
at::Tensor shift_labels(const at::Tensor& labels);

// Number of targets that are not ignore_index.
int64_t count_targets(const at::Tensor& targets);

// Sum of -log p(target) over the targets that are not ignore_index. logits [B, T, V],
// targets [B, T] (already shifted). Returns a fp32 scalar; 0 (not NaN) when nothing counts.
at::Tensor cross_entropy_sum(const at::Tensor& logits, const at::Tensor& targets);

}  // namespace meshtrain::nn

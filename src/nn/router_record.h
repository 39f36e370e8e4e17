// What a MoE layer's forward routed: its router logits (in the graph, for the auxiliary loss)
// and the counts the training metrics report.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace meshtrain::nn {

struct RouterRecord {
  at::Tensor router_logits;      // [N, E], in the graph (the aux loss backpropagates through it)
  at::Tensor tokens_per_expert;  // [E] long: assignments per expert, before any capacity drop
  int64_t dropped = 0;           // assignments dropped by the capacity limit
};

}  // namespace meshtrain::nn

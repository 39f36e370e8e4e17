#include "nn/token_dispatcher.h"

#include <cmath>

#include "util/check.h"

namespace meshtrain::nn {

int64_t expert_capacity(double capacity_factor, int64_t num_tokens, int64_t top_k, int64_t num_experts) {
  if (capacity_factor <= 0) return -1;
  const double cap = std::ceil(capacity_factor * static_cast<double>(num_tokens * top_k) /
                               static_cast<double>(num_experts));
  return std::max<int64_t>(1, static_cast<int64_t>(cap));
}

ExpertSort sort_by_expert(const at::Tensor& expert_ids, int64_t num_experts, int64_t capacity) {
  at::NoGradGuard no_grad;
  auto flat = expert_ids.reshape({-1});
  ExpertSort s;
  s.order = at::argsort(flat, /*stable=*/true);
  s.counts = at::bincount(flat, /*weights=*/{}, num_experts);
  MT_CHECK(s.counts.size(0) == num_experts, "expert ids must lie in [0, ", num_experts, "), got up to ",
           s.counts.size(0) - 1);
  if (capacity >= 0) {
    // Position of each sorted assignment inside its expert's segment; keep the first `capacity`.
    auto sorted_ids = flat.index_select(0, s.order);
    auto starts = s.counts.cumsum(0) - s.counts;
    auto position = at::arange(flat.size(0), flat.options()) - starts.index_select(0, sorted_ids);
    auto keep = position < capacity;
    s.dropped = flat.size(0) - keep.sum().item<int64_t>();
    s.order = s.order.masked_select(keep);
    s.counts = s.counts.clamp_max(capacity);
  }
  return s;
}

DispatchedTokens TokenDispatcher::dispatch(const at::Tensor& hidden, const at::Tensor& expert_ids,
                                           const at::Tensor& weights, const DispatchOptions& options) {
  MT_CHECK(hidden.dim() == 2 && expert_ids.dim() == 2 && expert_ids.size(0) == hidden.size(0) &&
               weights.sizes() == expert_ids.sizes(),
           "dispatch expects hidden [N, D], expert_ids and weights [N, k]; got ", hidden.sizes(), ", ",
           expert_ids.sizes(), ", ", weights.sizes());
  const int64_t n = hidden.size(0), k = expert_ids.size(1);
  auto sorted = sort_by_expert(expert_ids, options.num_experts,
                               expert_capacity(options.capacity_factor, n, k, options.num_experts));
  DispatchedTokens d;
  d.num_tokens = n;
  d.dropped = sorted.dropped;
  d.token_index = at::div(sorted.order, k, "floor");
  d.rows = hidden.index_select(0, d.token_index);
  d.row_weights = weights.reshape({-1}).index_select(0, sorted.order);
  auto counts = sorted.counts.cpu();
  d.rows_per_expert.assign(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + counts.numel());
  return d;
}

at::Tensor TokenDispatcher::combine(const at::Tensor& expert_out, const DispatchedTokens& d) {
  // As HF: each expert's output times its weight (promoted to fp32), cast back, added in expert order.
  auto weighted = (expert_out * d.row_weights.unsqueeze(-1)).to(expert_out.scalar_type());
  return at::zeros({d.num_tokens, expert_out.size(1)}, expert_out.options()).index_add(0, d.token_index, weighted);
}

}  // namespace meshtrain::nn

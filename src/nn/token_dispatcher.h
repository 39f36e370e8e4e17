// The TokenDispatcher seam of the MoE block: dispatch takes each token's top-k assignments to
// the rows this rank's experts compute, grouped by local expert; combine takes those rows'
// outputs back to the tokens. The serial default permutes and unpermutes locally.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace meshtrain::nn {

struct DispatchOptions {
  int64_t num_experts = 0;       // E, global
  double capacity_factor = 0.0;  // 0 = dropless; else per-expert capacity ceil(cf * N * k / E)
};

// The experts this rank computes: global ids [first, first + count).
struct ExpertRange {
  int64_t first = 0;
  int64_t count = 0;
};

struct DispatchedTokens {
  at::Tensor rows;                       // [M, D]: grouped by local expert, in expert order
  std::vector<int64_t> rows_per_expert;  // [E_local], sums to M
  int64_t dropped = 0;                   // assignments dropped by the capacity limit (this rank)
  // What the local combine needs: for each row its source token in [0, N) and routing weight.
  at::Tensor token_index;  // [M] long
  at::Tensor row_weights;  // [M] fp32
  int64_t num_tokens = 0;  // N
  // A parallel dispatcher's own state between dispatch and combine (splits, permutations).
  std::shared_ptr<void> context;
};

// The local permutation of N*k assignments (token-major, as expert_ids.reshape(-1) orders them):
// `order` lists the kept assignments sorted stably by expert, `counts` [E] how many each expert
// keeps. With a capacity, an expert keeps its first `capacity` assignments in token order.
struct ExpertSort {
  at::Tensor order;   // [kept] long, indices into the N*k assignments
  at::Tensor counts;  // [E] long
  int64_t dropped = 0;
};
ExpertSort sort_by_expert(const at::Tensor& expert_ids, int64_t num_experts, int64_t capacity = -1);

// ceil(capacity_factor * N * k / E), at least 1; -1 (no limit) when capacity_factor is 0.
int64_t expert_capacity(double capacity_factor, int64_t num_tokens, int64_t top_k, int64_t num_experts);

// Expert parallelism replaces it (experts sharded on dim 0, local_experts() naming this rank's):
// - router masking (upstream-compatible; every ep rank sees all tokens): dispatch keeps only the
//   assignments to local experts (sort_by_expert on the ids, the rest masked out), combine
//   index_adds locally and then all-reduces [N, D] over ep (backward: all-reduce of the grads);
// - all-to-all (tokens sharded over dp/cp): dispatch sorts locally by expert, exchanges the
//   per-rank counts, then all-to-alls the rows with variable splits and regroups them by local
//   expert (state kept in `context`); combine runs the inverse all-to-all and the weighted
//   index_add on the token's own rank.
class TokenDispatcher {
 public:
  virtual ~TokenDispatcher() = default;
  virtual ExpertRange local_experts(int64_t num_experts) const { return {0, num_experts}; }
  // hidden [N, D], expert_ids [N, k] (global ids), weights [N, k] -> the rows of local experts.
  virtual DispatchedTokens dispatch(const at::Tensor& hidden, const at::Tensor& expert_ids,
                                    const at::Tensor& weights, const DispatchOptions& options);
  // expert_out [M, D] (rows as dispatched) -> [N, D]: each token's weighted sum over its experts,
  // in the dtype of expert_out.
  virtual at::Tensor combine(const at::Tensor& expert_out, const DispatchedTokens& dispatched);
  // This dispatcher with `core` moving the tokens: a wrapper (tensor parallelism inside the
  // experts) stays around the new core; a core gives way to it.
  virtual std::shared_ptr<TokenDispatcher> around(std::shared_ptr<TokenDispatcher> core) { return core; }
};

inline std::shared_ptr<TokenDispatcher> local_dispatcher() {
  static auto dispatcher = std::make_shared<TokenDispatcher>();
  return dispatcher;
}

}  // namespace meshtrain::nn

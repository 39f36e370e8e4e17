// The sparse mixture-of-experts block of Mixtral and Qwen3-MoE with Hugging Face's math: router
// logits x·Wᵀ, softmax in fp32, top-k, renormalised top-k weights (optional), SwiGLU experts
// stored fused (gate_up_proj [E, 2I, D], gate rows first; down_proj [E, D, I]) and computed as
// grouped GEMMs over the tokens sorted by expert. Token movement goes through a TokenDispatcher.
#pragma once
#include <torch/nn/module.h>

#include <memory>
#include <vector>

#include "nn/block_style.h"
#include "nn/linear.h"
#include "nn/router_record.h"
#include "nn/token_dispatcher.h"

namespace meshtrain::nn {

struct MoeShape {
  int64_t hidden_size = 0;        // D
  int64_t num_experts = 0;        // E
  int64_t top_k = 0;              // k
  int64_t intermediate_size = 0;  // I of each expert
  bool norm_topk_prob = true;
  double capacity_factor = 0.0;  // 0 = dropless
};

// How the experts' GEMMs run: at::_grouped_mm over the segments, or one at::mm per non-empty
// segment. Auto takes the grouped kernel where it applies (CPU, 16-byte aligned rows).
enum class GemmPath { Auto, Grouped, PerExpert };

// x [M, in] with rows grouped in segments of counts[g] rows, w [G, out, in] -> [M, out]:
// segment g times w[g]ᵀ.
at::Tensor grouped_linear(const at::Tensor& x, const at::Tensor& w, const std::vector<int64_t>& counts,
                          GemmPath path = GemmPath::Auto);

// The experts' weights, HF names experts.gate_up_proj and experts.down_proj. Under expert
// parallelism a rank holds only its experts (dim 0).
class Experts : public torch::nn::Module {
 public:
  Experts(int64_t num_experts, int64_t hidden_size, int64_t intermediate_size);
  // rows [M, D] in per-expert segments -> [M, D]: down(silu(gate(x)) * up(x)) of each row's expert.
  at::Tensor forward(const at::Tensor& rows, const std::vector<int64_t>& rows_per_expert);

  at::Tensor gate_up_proj;  // [E, 2I, D]
  at::Tensor down_proj;     // [E, D, I]
  GemmPath gemm_path = GemmPath::Auto;
};

struct MoeOutput {
  at::Tensor hidden;  // [..., D]
  RouterRecord router;
};

class SparseMoe : public torch::nn::Module {
 public:
  explicit SparseMoe(const MoeShape& shape);
  MoeOutput forward(const at::Tensor& x);  // [..., D] -> [..., D] and its routing
  void set_dispatcher(std::shared_ptr<TokenDispatcher> dispatcher) { dispatcher_ = std::move(dispatcher); }
  const std::shared_ptr<TokenDispatcher>& dispatcher() const { return dispatcher_; }
  void set_block_style(std::shared_ptr<BlockStyle> style) { block_ = std::move(style); }
  const MoeShape& shape() const { return shape_; }
  void set_capacity_factor(double capacity_factor) { shape_.capacity_factor = capacity_factor; }

  std::shared_ptr<Linear> gate;  // the router, weight [E, D], no bias
  std::shared_ptr<Experts> experts;

 private:
  MoeShape shape_;
  std::shared_ptr<TokenDispatcher> dispatcher_ = local_dispatcher();
  std::shared_ptr<BlockStyle> block_ = pass_through_block();
};

// Hugging Face's load_balancing_loss_func (Switch Transformer, eqs. 4-6) without attention
// mask: the router logits of all MoE layers concatenated to [R, E], softmax, top-k one-hot;
// E * sum_e(fraction of assignments to e * mean routing probability of e).
at::Tensor load_balancing_loss(const std::vector<at::Tensor>& router_logits, int64_t num_experts, int64_t top_k);

// The sums the load-balancing loss is made of, so that they can be summed over ranks first.
struct RouterLoad {
  at::Tensor assignments;  // [E] fp32: top-k assignments per expert (no gradient)
  at::Tensor prob_sum;     // [E] fp32: routing probabilities summed over the rows (in the graph)
  int64_t rows = 0;        // R: rows of all layers' logits
};
RouterLoad router_load(const std::vector<at::Tensor>& router_logits, int64_t num_experts, int64_t top_k);
// E * sum_e (assignments_e / rows) * (prob_sum_e / rows). With the assignments and rows of the
// whole batch and this rank's prob_sum, the sum over ranks is the whole batch's loss.
at::Tensor balance_loss(const at::Tensor& assignments, const at::Tensor& prob_sum, double rows);

}  // namespace meshtrain::nn

#include "parallel/router_balance.h"

#include <algorithm>

namespace meshtrain::parallel {

double aux_loss_scale(const models::LlamaConfig& config, int64_t micro_batches) {
  if (!config.moe || !config.moe->output_router_logits) return 0.0;
  return config.moe->router_aux_loss_coef / static_cast<double>(std::max<int64_t>(micro_batches, 1));
}

RouterBalance::RouterBalance(const models::LlamaForCausalLM& model, const models::Routing& routing)
    : experts_(model.config().moe->num_experts) {
  if (routing.empty()) {
    totals_ = at::zeros({2 * experts_ + 1}, at::kDouble);
    return;
  }
  auto load = model.router_load(routing);
  prob_sum_ = load.prob_sum;
  totals_ = at::cat({load.assignments, load.prob_sum.detach(), at::full({1}, static_cast<double>(load.rows), load.assignments.options())})
                .to(at::kDouble);
}

at::Tensor RouterBalance::term() const {
  if (!prob_sum_.defined()) return {};
  return nn::balance_loss(totals_.slice(0, 0, experts_).to(at::kFloat), prob_sum_, totals_[2 * experts_].item<double>());
}

double RouterBalance::loss() const {
  return nn::balance_loss(totals_.slice(0, 0, experts_).to(at::kFloat),
                          totals_.slice(0, experts_, 2 * experts_).to(at::kFloat), totals_[2 * experts_].item<double>())
      .item<double>();
}

}  // namespace meshtrain::parallel

#include "train/adamw.h"

#include "util/check.h"

namespace meshtrain::train {

bool decays(const std::string& name) {
  return !(name.ends_with(".bias") || name.ends_with("norm.weight"));
}

AdamW::AdamW(const std::vector<std::pair<std::string, at::Tensor>>& named_params, AdamWOptions options)
    : options_(options) {
  groups_.push_back({options.weight_decay, {}, {}, {}, {}, {}});
  groups_.push_back({0.0, {}, {}, {}, {}, {}});
  for (auto& [name, p] : named_params) {
    auto& g = groups_[decays(name) ? 0 : 1];
    g.names.push_back(name);
    g.params.push_back(p);
    g.exp_avg.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
    g.exp_avg_sq.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
    g.steps.push_back(at::zeros({}, p.options().dtype(at::kFloat)));
  }
}

void AdamW::step(double lr) {
  at::NoGradGuard no_grad;
  ++steps_taken_;
  for (auto& g : groups_) {
    std::vector<at::Tensor> params, grads, m, v, steps;
    for (size_t i = 0; i < g.params.size(); ++i) {
      if (!g.params[i].grad().defined()) continue;
      params.push_back(g.params[i]);
      grads.push_back(g.params[i].grad());
      m.push_back(g.exp_avg[i]);
      v.push_back(g.exp_avg_sq[i]);
      steps.push_back(g.steps[i]);
    }
    if (params.empty()) continue;
    at::_foreach_add_(steps, 1.0);
    at::_fused_adamw_(params, grads, m, v, /*max_exp_avg_sqs=*/{}, steps, lr, options_.beta1,
                      options_.beta2, g.weight_decay, options_.eps, /*amsgrad=*/false,
                      /*maximize=*/false);
  }
}

void AdamW::zero_grad() {
  for (auto& g : groups_)
    for (auto& p : g.params) p.mutable_grad() = at::Tensor();
}

void AdamW::set_steps_taken(int64_t steps) {
  steps_taken_ = steps;
  for (auto& g : groups_)
    for (auto& s : g.steps) s.fill_(static_cast<double>(steps));
}

std::vector<std::pair<std::string, at::Tensor>> AdamW::state_tensors() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (auto& g : groups_)
    for (size_t i = 0; i < g.names.size(); ++i) {
      out.emplace_back(g.names[i] + ".exp_avg", g.exp_avg[i]);
      out.emplace_back(g.names[i] + ".exp_avg_sq", g.exp_avg_sq[i]);
    }
  return out;
}

}  // namespace meshtrain::train

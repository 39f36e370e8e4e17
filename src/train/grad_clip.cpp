#include "train/grad_clip.h"

#include <algorithm>
#include <cmath>

namespace meshtrain::train {

namespace {

std::vector<at::Tensor> grads_of(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> grads;
  for (auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  return grads;
}

}  // namespace

double global_grad_norm(const std::vector<at::Tensor>& params) {
  auto grads = grads_of(params);
  if (grads.empty()) return 0.0;
  auto norms = at::_foreach_norm(grads, 2);
  return at::stack(norms).to(at::kDouble).norm().item<double>();
}

double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm) {
  const double norm = global_grad_norm(params);
  if (max_norm > 0) {
    const double coef = std::min(1.0, max_norm / (norm + 1e-6));
    auto grads = grads_of(params);
    if (coef < 1.0 && !grads.empty()) at::_foreach_mul_(grads, coef);
  }
  return norm;
}

}  // namespace meshtrain::train

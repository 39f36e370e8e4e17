// Global-norm gradient clipping as torch.nn.utils.clip_grad_norm_: the L2 norm over all
// gradients together; gradients scaled by min(1, max_norm / (norm + 1e-6)).
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace meshtrain::train {

double global_grad_norm(const std::vector<at::Tensor>& params);
// Returns the norm before clipping; max_norm <= 0 only measures.
double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm);

}  // namespace meshtrain::train

// The SwiGLU feed-forward block: down_proj(silu(gate_proj(x)) * up_proj(x)).
#pragma once
#include <torch/nn/module.h>

#include <memory>

#include "nn/linear.h"

namespace meshtrain::nn {

class Mlp : public torch::nn::Module {
 public:
  Mlp(int64_t hidden_size, int64_t intermediate_size, bool bias);
  at::Tensor forward(const at::Tensor& x);  // [B, T, D] -> [B, T, D]

  std::shared_ptr<Linear> gate_proj, up_proj, down_proj;
};

}  // namespace meshtrain::nn

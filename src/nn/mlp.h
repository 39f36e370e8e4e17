// The SwiGLU feed-forward block: down_proj(silu(gate_proj(x)) * up_proj(x)).
#pragma once
#include <torch/nn/module.h>

#include <memory>

#include "nn/block_style.h"
#include "nn/linear.h"

namespace meshtrain::nn {

class Mlp : public torch::nn::Module {
 public:
  Mlp(int64_t hidden_size, int64_t intermediate_size, bool bias);
  at::Tensor forward(const at::Tensor& x);  // [B, T, D] -> [B, T, D]

  void set_block_style(std::shared_ptr<BlockStyle> style) { block_ = std::move(style); }

  std::shared_ptr<Linear> gate_proj, up_proj, down_proj;

 private:
  std::shared_ptr<BlockStyle> block_ = pass_through_block();
};

}  // namespace meshtrain::nn

#include "nn/mlp.h"

namespace meshtrain::nn {

Mlp::Mlp(int64_t hidden, int64_t intermediate, bool bias) {
  gate_proj = register_module("gate_proj", std::make_shared<Linear>(hidden, intermediate, bias));
  up_proj = register_module("up_proj", std::make_shared<Linear>(hidden, intermediate, bias));
  down_proj = register_module("down_proj", std::make_shared<Linear>(intermediate, hidden, bias));
}

at::Tensor Mlp::forward(const at::Tensor& input) {
  auto x = block_->enter(input);
  return block_->leave(down_proj->forward(at::silu(gate_proj->forward(x)) * up_proj->forward(x)));
}

}  // namespace meshtrain::nn

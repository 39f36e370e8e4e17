// The BlockInputStyle seam: how an attention or MLP block receives the residual stream. With
// Megatron sequence parallelism the stream stays sharded on the sequence between blocks and
// each block all-gathers it on entry; serially it passes through.
#pragma once
#include <ATen/ATen.h>

#include <memory>

namespace meshtrain::nn {

struct BlockInputStyle {
  virtual ~BlockInputStyle() = default;
  virtual at::Tensor enter(const at::Tensor& x) const { return x; }
};

inline std::shared_ptr<BlockInputStyle> pass_through_input() {
  static auto style = std::make_shared<BlockInputStyle>();
  return style;
}

}  // namespace meshtrain::nn

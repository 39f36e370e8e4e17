// The BlockStyle seam: how an attention, MLP or MoE block receives the residual stream and hands
// its output back (under Megatron sequence parallelism: all-gather on entry, reduce-scatter or
// the own shard on exit). Serially both pass through.
#pragma once
#include <ATen/ATen.h>

#include <memory>

namespace meshtrain::nn {

struct BlockStyle {
  virtual ~BlockStyle() = default;
  virtual at::Tensor enter(const at::Tensor& x) const { return x; }
  virtual at::Tensor leave(const at::Tensor& y) const { return y; }
};

inline std::shared_ptr<BlockStyle> pass_through_block() {
  static auto style = std::make_shared<BlockStyle>();
  return style;
}

}  // namespace meshtrain::nn

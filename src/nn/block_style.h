// The BlockStyle seam: how an attention, MLP or MoE block receives the residual stream and hands
// its output back. With Megatron sequence parallelism the stream stays sharded on the sequence
// between blocks: each block all-gathers it on entry; attention and MLP leave through their
// rowwise projection's reduce-scatter, a MoE block by keeping its own shard of the output.
// Serially both pass through.
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

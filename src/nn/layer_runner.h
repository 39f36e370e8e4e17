// The LayerRunner seam: how the decoder stack runs each layer. The serial default calls the
// layer; activation checkpointing and FSDP (gather before, free after) wrap the call.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>

namespace meshtrain::nn {

using LayerForward = std::function<at::Tensor(const at::Tensor&)>;

class LayerRunner {
 public:
  virtual ~LayerRunner() = default;
  virtual at::Tensor run(int64_t layer_index, const LayerForward& layer, const at::Tensor& hidden) {
    return layer(hidden);
  }
};

}  // namespace meshtrain::nn

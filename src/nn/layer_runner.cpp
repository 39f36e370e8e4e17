#include "nn/layer_runner.h"

#include <algorithm>

namespace meshtrain::nn {

void LayerRunnerChain::remove(const LayerRunner* runner) {
  std::erase_if(runners_, [&](const auto& r) { return r.get() == runner; });
}

LayerOutput LayerRunnerChain::run(int64_t index, const LayerForward& layer, const at::Tensor& hidden) const {
  return run_from(0, index, layer, hidden);
}

LayerOutput LayerRunnerChain::run_from(size_t position, int64_t index, const LayerForward& layer,
                                       const at::Tensor& hidden) const {
  if (position == runners_.size()) return layer(hidden);
  // By value: a runner may call the rest of the chain again later (recomputation in backward).
  return runners_[position]->run(
      index, [this, position, index, layer](const at::Tensor& h) { return run_from(position + 1, index, layer, h); },
      hidden);
}

}  // namespace meshtrain::nn

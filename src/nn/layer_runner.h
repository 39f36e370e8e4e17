// The LayerRunner seam: how the decoder stack runs each layer. A chain of runners, outermost
// first, each wrapping the rest of the chain: FSDP's gather / free around activation
// checkpointing around the layer. An empty chain calls the layer.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "nn/router_record.h"

namespace meshtrain::nn {

// What a decoder layer returns: its hidden states and, for a MoE layer, its routing.
struct LayerOutput {
  at::Tensor hidden;
  std::optional<RouterRecord> router;
};

using LayerForward = std::function<LayerOutput(const at::Tensor&)>;

class LayerRunner {
 public:
  virtual ~LayerRunner() = default;
  // Runs layer `index` on hidden; `inner` is the rest of the chain (the layer itself last).
  virtual LayerOutput run(int64_t index, const LayerForward& inner, const at::Tensor& hidden) = 0;
};

class LayerRunnerChain {
 public:
  // The runner goes around those installed before it.
  void wrap(std::shared_ptr<LayerRunner> runner) { runners_.insert(runners_.begin(), std::move(runner)); }
  void remove(const LayerRunner* runner);
  size_t size() const { return runners_.size(); }
  LayerOutput run(int64_t index, const LayerForward& layer, const at::Tensor& hidden) const;

 private:
  LayerOutput run_from(size_t position, int64_t index, const LayerForward& layer, const at::Tensor& hidden) const;
  std::vector<std::shared_ptr<LayerRunner>> runners_;  // outermost first
};

}  // namespace meshtrain::nn

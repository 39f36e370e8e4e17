// FSDP (ZeRO-3) over dp_shard × cp, HSDP with dp_replicate × sp: chunks of dim 0, units gathered
// as flat buffers around each layer's forward (the outermost LayerRunner), gradients
// reduce-scattered in backward (docs/parallelism.md).
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "dist/collectives.h"
#include "models/llama.h"

namespace meshtrain::parallel {

class Fsdp {
 public:
  // Shards every parameter held alike by all token-holding ranks (dp_cp_sp replicated) over
  // shard_group (dp_shard × cp); gradients are all-reduced over replicate_group (dp_replicate × sp).
  // As torch's MixedPrecisionPolicy: weights are gathered (and computed with) in param_dtype,
  // gradients summed in reduce_dtype; the shards and their gradients stay fp32.
  Fsdp(models::LlamaForCausalLM& model, dist::Group& shard_group, dist::Group& replicate_group,
       bool reshard_after_forward, at::ScalarType param_dtype = at::kFloat, at::ScalarType reduce_dtype = at::kFloat);
  ~Fsdp();

  struct Param {
    at::Tensor shard;             // the registered parameter: this rank's rows
    at::Tensor* slot;             // what the module reads in forward
    at::Tensor full;              // the gathered weight, while it lives
    std::vector<int64_t> rows;    // dim-0 rows of every rank
    int64_t row_numel;            // elements per row
  };
  struct Unit {
    std::vector<Param> params;
    std::vector<int64_t> flat_sizes;  // elements of every rank's flat buffer
    std::optional<dist::PendingGather> pending;
  };

  // Gathers the root unit into the model's slots and starts the gather of the first layer the
  // forward runs (a pipeline stage's first); call before each forward.
  void gather_root(int64_t first_layer = 0);
  // Layer runner and backward hooks.
  void gather_layer(int64_t index);
  void after_layer_forward(int64_t index, at::Tensor& out);

  // Used by the gather function: the flat layout of a unit.
  std::vector<at::Tensor> unflatten(const Unit& unit, const at::Tensor& flat) const;
  at::Tensor flatten_grads(const Unit& unit, const std::vector<at::Tensor>& grads) const;
  dist::Group& shard_group() const { return shard_group_; }
  dist::Group& replicate_group() const { return replicate_group_; }
  // [root, layer 0, layer 1, ...], for the planner.
  const std::vector<Unit>& units() const { return units_; }
  bool reshard_after_forward() const { return reshard_after_forward_; }
  at::ScalarType reduce_dtype() const { return reduce_dtype_; }

 private:
  void gather(Unit& unit);
  at::Tensor local_flat(const Unit& unit) const;
  void prefetch(Unit& unit);
  at::Tensor take_gathered(Unit& unit);
  void free(Unit& unit);
  void regather(Unit& unit);

  models::LlamaForCausalLM& model_;
  std::vector<Unit> units_;  // [root, layer 0, layer 1, ...]
  dist::Group& shard_group_;
  dist::Group& replicate_group_;
  bool reshard_after_forward_;
  at::ScalarType param_dtype_, reduce_dtype_;
  std::shared_ptr<nn::LayerRunner> runner_;
};

}  // namespace meshtrain::parallel

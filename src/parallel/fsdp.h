// FSDP (ZeRO-3) over dp_shard, HSDP when dp_replicate > 1 too: every parameter keeps only its
// torch.chunk block of dim 0 (so gradients and AdamW state are sharded as well). A unit (the
// root: embeddings, final norm, lm_head; then each decoder layer) is all-gathered just before
// its forward, through an autograd function whose backward reduce-scatters the gradient (and
// all-reduces it over dp_replicate). With reshard_after_forward a layer's full weights are
// freed after its forward and gathered again when its backward begins.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "dist/device_mesh.h"
#include "models/llama.h"

namespace meshtrain::parallel {

class Fsdp {
 public:
  Fsdp(models::LlamaForCausalLM& model, const dist::DeviceMesh& mesh, bool reshard_after_forward);
  ~Fsdp();

  // Gathers the root unit into the model's slots; call before each forward.
  void gather_root();

  struct Param {
    std::string name;
    at::Tensor shard;        // the registered parameter: this rank's block
    at::Tensor* slot;        // what the module reads in forward
    at::Tensor full;         // the gathered weight, while it lives
    std::vector<int64_t> sizes;  // dim-0 block sizes of all ranks
  };
  struct Unit {
    std::vector<Param> params;
  };

  // Used by the layer runner and the gather function.
  void gather(Unit& unit);
  void free(Unit& unit);
  void regather(Unit& unit);
  Unit& layer_unit(int64_t i) { return units_[static_cast<size_t>(i) + 1]; }
  dist::Group& shard_group() const { return shard_group_; }
  dist::Group& replicate_group() const { return replicate_group_; }
  bool reshard_after_forward() const { return reshard_after_forward_; }

 private:
  models::LlamaForCausalLM& model_;
  std::vector<Unit> units_;  // [root, layer 0, layer 1, ...]
  dist::Group& shard_group_;
  dist::Group& replicate_group_;
  bool reshard_after_forward_;
};

}  // namespace meshtrain::parallel

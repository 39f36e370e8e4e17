// The gradient-sync plan: which parameters are reduced over which group, by DDP's buckets, FSDP
// or an all-reduce after backward, derived from the placement records alone (docs/parallelism.md).
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "dist/device_mesh.h"
#include "models/llama.h"

namespace meshtrain::parallel {

enum class SyncMechanism {
  DdpBuckets,          // bucketed all-reduce started by gradient hooks during backward
  FsdpReduceScatter,   // in FSDP's backward, one flat buffer per unit
  FsdpAllReduce,       //   and its all-reduce over the replicas of the shard
  AllReduce,           // one flat all-reduce per dim after backward
};
const char* name_of(SyncMechanism mechanism);

struct GradSync {
  std::string param;
  MeshDim dim;
  SyncMechanism mechanism;
  at::ScalarType dtype = at::kFloat;  // of the reduction
  int64_t numel = 0;                  // of this rank's gradient
};

class GradSyncPlan {
 public:
  // Checks that each record spans the mesh once (the sizes of its dims multiply to the world
  // size), else an error naming the parameter; dims of size 1 need no sync and are left out.
  // Every sync reduces in reduce_dtype (--reduce_dtype).
  GradSyncPlan(const models::LlamaForCausalLM& model, const dist::DeviceMesh& mesh,
               at::ScalarType reduce_dtype = at::kFloat);

  const std::vector<GradSync>& syncs() const { return syncs_; }
  // The parameters synchronised by one mechanism, in model order (each once).
  std::vector<std::string> params(SyncMechanism mechanism) const;
  // Those summed by a plain all-reduce after backward, per dim, in a fixed dim order.
  std::vector<std::pair<MeshDim, std::vector<std::string>>> after_backward() const;
  // Bytes this rank sends for them per step (ring all-reduce 2(n-1)/n, reduce-scatter (n-1)/n).
  uint64_t bytes_sent(const GradSync& sync, const dist::DeviceMesh& mesh) const;

 private:
  std::vector<GradSync> syncs_;
};

}  // namespace meshtrain::parallel

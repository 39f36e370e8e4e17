// parallelize(): the one place that knows in which order the parallel units apply to a model
// on a mesh. Today: tensor parallelism first (it decides what each rank holds), then FSDP over
// dp_shard when dp_shard > 1 (HSDP with dp_replicate), else DDP over dp_replicate. The trainer
// talks to the result only.
#pragma once
#include <memory>
#include <vector>

#include "dist/device_mesh.h"
#include "models/llama.h"
#include "parallel/ddp.h"
#include "parallel/fsdp.h"
#include "parallel/tensor_parallel.h"

namespace meshtrain::parallel {

struct ParallelOptions {
  double ddp_bucket_cap_mb = 25.0;
  bool reshard_after_forward = true;
  TpPlan tp_plan = TpPlan::llama_default();
};

class ParallelModel {
 public:
  ParallelModel(std::shared_ptr<models::LlamaForCausalLM> model, std::shared_ptr<const dist::DeviceMesh> mesh,
                const ParallelOptions& options);

  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& position_ids = {});
  // Before each micro-batch's backward; only the last one synchronises DDP gradients.
  void prepare_backward(bool last_micro_batch);
  // After the last backward of a step: gradients are complete and consistent.
  void finish_backward();
  // Global L2 norm over every parameter counted once (shards summed over their mesh dims),
  // then torch's clip_grad_norm_ scaling. Returns the norm before clipping.
  double clip_grad_norm(double max_norm);

  models::LlamaForCausalLM& model() { return *model_; }
  const dist::DeviceMesh& mesh() const { return *mesh_; }
  const DdpReducer* ddp() const { return ddp_.get(); }
  const TpReport& tp_report() const { return tp_report_; }

 private:
  std::shared_ptr<models::LlamaForCausalLM> model_;
  std::shared_ptr<const dist::DeviceMesh> mesh_;
  TpReport tp_report_;
  std::unique_ptr<Fsdp> fsdp_;
  std::unique_ptr<DdpReducer> ddp_;
};

}  // namespace meshtrain::parallel

// parallelize(): the one place that knows in which order the parallel units apply to a model
// on a mesh. Tensor (and Megatron sequence) parallelism first: it decides what each rank holds.
// It also splits MoE experts inside (over tp, or over the etp blocks of tp under router
// masking). Expert parallelism next: router masking shards the experts over ranks of the tp
// group, token dispatch over blocks of the dp_shard × cp ranks; data parallelism then leaves
// those experts alone (their gradients are summed over the ranks holding the same experts,
// ep_replicate).
// Then the attention cores of context (ring) and Ulysses parallelism, which only change how
// attention runs. Then FSDP over dp_shard × cp when dp_shard > 1 (HSDP with dp_replicate × sp),
// sharding the tp shards further, else DDP over every rank that holds different tokens
// (dp_replicate × cp × sp). The trainer talks to the result only.
#pragma once
#include <filesystem>
#include <memory>
#include <optional>
#include <vector>

#include "dist/device_mesh.h"
#include "models/llama.h"
#include "parallel/context_parallel.h"
#include "parallel/ddp.h"
#include "parallel/expert_parallel.h"
#include "parallel/fsdp.h"
#include "parallel/tensor_parallel.h"

namespace meshtrain::parallel {

struct ParallelOptions {
  double ddp_bucket_cap_mb = 25.0;
  bool reshard_after_forward = true;
  std::optional<TpPlan> tp_plan;  // default: the model type's Hugging Face plan
  bool sequence_parallel = false;  // Megatron sequence parallelism on the tp dim
  bool loss_parallel = false;      // vocab-parallel cross entropy on tp-sharded logits
  CpCommStrategy cp_comm_strategy = CpCommStrategy::Ring;
  int64_t ep_size = 1;  // expert parallelism over MoE experts
  EpMode ep_mode = EpMode::AllToAll;
};

class ParallelModel {
 public:
  ParallelModel(std::shared_ptr<models::LlamaForCausalLM> model, std::shared_ptr<const dist::DeviceMesh> mesh,
                const ParallelOptions& options);

  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& position_ids = {});
  // Forward and the summed cross entropy of the targets (labels already shifted on the full
  // sequence) that count, vocab-parallel when the logits are sharded. Under cp / sp the rows
  // are cut to this rank's sequence shard (with its global positions) first, so the sum covers
  // this rank's tokens only: summed over "dp_cp_sp" it is the global step's.
  at::Tensor loss_sum(const at::Tensor& input_ids, const at::Tensor& targets);
  // Whether sequences of seq_len tokens can be sharded over cp, sp and (sequence parallel) tp;
  // an error with the numbers if not.
  void check_sequence_length(int64_t seq_len) const;
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
  std::vector<std::pair<dist::Group*, std::vector<at::Tensor>>> grad_sums_;  // after backward
  bool sequence_parallel_ = false;
};

// An HF checkpoint on the mesh: the model is parallelised before its weights are read, so each
// rank reads only its own block of every tensor.
std::shared_ptr<ParallelModel> load_pretrained_parallel(const std::filesystem::path& dir,
                                                        std::shared_ptr<const dist::DeviceMesh> mesh,
                                                        const ParallelOptions& options);

}  // namespace meshtrain::parallel

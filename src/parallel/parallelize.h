// parallelize(): the one place that knows in which order the parallel units apply to a model
// on a mesh, and ParallelModel, the runtime the trainer drives (forward, loss, backward, clip).
// The order and its reasons are in parallelize.cpp; docs/parallelism.md describes the units.
#pragma once
#include <filesystem>
#include <memory>

#include "models/llama.h"
#include "parallel/parallel_options.h"

namespace meshtrain::dist {
class DeviceMesh;
class Group;
}  // namespace meshtrain::dist

namespace meshtrain::parallel {

class DdpReducer;
class Fsdp;
class GradSyncPlan;
struct TpReport;

// What parallelize() installed on a model.
struct Parallelized {
  Parallelized();
  Parallelized(Parallelized&&) noexcept;
  ~Parallelized();
  std::unique_ptr<TpReport> tp;       // always set (empty without tensor parallelism)
  std::unique_ptr<Fsdp> fsdp;         // when dp_shard > 1
  std::unique_ptr<GradSyncPlan> sync;
  std::unique_ptr<DdpReducer> ddp;    // when the plan gives DDP's buckets parameters
};

Parallelized parallelize(models::LlamaForCausalLM& model, const dist::DeviceMesh& mesh, const ParallelOptions& options);

class ParallelModel {
 public:
  ParallelModel(std::shared_ptr<models::LlamaForCausalLM> model, std::shared_ptr<const dist::DeviceMesh> mesh,
                const ParallelOptions& options);
  ~ParallelModel();

  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& position_ids = {},
                     models::Routing* routing = nullptr, const at::Tensor& document_ids = {});
  // Forward and the summed cross entropy of the targets (labels already shifted on the full
  // sequence) that count, vocab-parallel when the logits are sharded. Under cp / sp the rows
  // are cut to this rank's sequence shard (with its global positions) first, so the sum covers
  // this rank's tokens only: summed over dp_cp_sp it is the global step's. Packed rows give their
  // position_ids [B, T] (restarting at each document): RoPE takes them and attention stays inside
  // each document. The step's loss is step_loss() (parallel/step_loss.h), which calls this.
  at::Tensor loss_sum(const at::Tensor& input_ids, const at::Tensor& targets, models::Routing* routing = nullptr,
                      const at::Tensor& position_ids = {});

  // Pipeline stages (parallel/pipeline_runner.h). The forward of one micro-batch through `stage`
  // (global, one this rank holds): the first stage reads input_ids [B, T] (cut to this rank's
  // sequence shard), the others `hidden`, the activation the previous stage sent; the last returns
  // logits, the others hidden states. position_ids as loss_sum takes them; the stage's MoE
  // layers' router records go to `routing`.
  at::Tensor stage_forward(int64_t stage, const at::Tensor& input_ids, const at::Tensor& hidden,
                           const at::Tensor& position_ids = {}, models::Routing* routing = nullptr);
  // All the pipeline's stages (pp_size · virtual stages); 1 without pp.
  int64_t pipeline_stages() const { return static_cast<int64_t>(stage_layers_.size()); }
  // The decoder layers [begin, end) of a stage (global); all of them without pp.
  std::pair<int64_t, int64_t> stage_layers(int64_t stage) const { return stage_layers_.at(static_cast<size_t>(stage)); }
  // The stages this rank holds, in order (stage 0 alone without pp).
  std::vector<int64_t> held_stages() const;
  // The summed cross entropy of the last stage's logits against the micro-batch's targets.
  at::Tensor logits_loss_sum(const at::Tensor& logits, const at::Tensor& targets);
  // The shape of the hidden states passed between stages for a micro-batch of input_ids:
  // [B, T on this rank (/ tp under sequence parallelism), D].
  std::vector<int64_t> stage_activation_shape(const at::Tensor& input_ids) const;
  const PipelineOptions& pipeline() const { return pipeline_; }
  // Whether sequences of seq_len tokens can be sharded over cp, sp and (sequence parallel) tp;
  // an error with the numbers if not.
  void check_sequence_length(int64_t seq_len) const;
  // Before each micro-batch's backward; only the last one synchronises DDP gradients.
  void prepare_backward(bool last_micro_batch);
  // After the last backward of a step: every gradient synchronised as the sync plan says.
  void finish_backward();
  // Global L2 norm over every parameter counted once (shards summed over their mesh dims),
  // then torch's clip_grad_norm_ scaling. Returns the norm before clipping.
  double clip_grad_norm(double max_norm);

  models::LlamaForCausalLM& model() { return *model_; }
  const dist::DeviceMesh& mesh() const { return *mesh_; }
  // Where the parameters and activations live; micro-batches come from the CPU and move here.
  c10::Device device() const { return device_; }
  bool bf16() const { return bf16_; }
  const DdpReducer* ddp() const { return parts_.ddp.get(); }
  const Fsdp* fsdp() const { return parts_.fsdp.get(); }
  const TpReport& tp_report() const { return *parts_.tp; }
  const GradSyncPlan& sync_plan() const { return *parts_.sync; }

 private:
  std::shared_ptr<models::LlamaForCausalLM> model_;
  std::shared_ptr<const dist::DeviceMesh> mesh_;
  // A micro-batch as this rank runs it: its sequence shard, the positions of that shard, and the
  // documents of the whole rows (undefined unless packed).
  struct LocalInputs {
    at::Tensor ids, positions, documents;
  };
  LocalInputs local_inputs(const at::Tensor& input_ids, const at::Tensor& position_ids) const;

  bool sequence_parallel_ = false;
  bool bf16_ = false;
  at::ScalarType reduce_dtype_ = at::kFloat;
  c10::Device device_ = c10::kCPU;
  PipelineOptions pipeline_;
  std::vector<std::pair<int64_t, int64_t>> stage_layers_;  // decoder layers [begin, end) of every stage
  Parallelized parts_;
  std::vector<std::pair<dist::Group*, std::vector<at::Tensor>>> after_backward_;  // the plan's all-reduces
};

// An HF checkpoint on the mesh: the model is parallelised before its weights are read, so each
// rank reads only its own block of every tensor.
std::shared_ptr<ParallelModel> load_pretrained_parallel(const std::filesystem::path& dir,
                                                        std::shared_ptr<const dist::DeviceMesh> mesh,
                                                        const ParallelOptions& options);

}  // namespace meshtrain::parallel

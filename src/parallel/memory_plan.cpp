#include "parallel/memory_plan.h"

#include <algorithm>
#include <map>
#include <numeric>

#include "dist/comm_autograd.h"
#include "dist/device_mesh.h"
#include "parallel/fsdp.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/tensor_parallel.h"

namespace meshtrain::parallel {

namespace {

constexpr int64_t kFloat = 4;

// This rank's share of n split like torch.chunk over the ranks of a dim's group.
int64_t chunk_of(int64_t n, const dist::DeviceMesh& mesh, MeshDim dim) {
  const auto& g = mesh.group(dim);
  return dist::chunk_sizes(n, g.size())[static_cast<size_t>(g.rank())];
}

// Rows of a projection's output on this rank: its tp shard when the record shards it on tp.
int64_t local_rows(const models::LlamaForCausalLM& model, const std::string& name, const dist::DeviceMesh& mesh) {
  const auto& place = model.placement(name);
  const int64_t rows = place.global_shape[0];
  return place.is(MeshDim::Tp, nn::Placement::Kind::Shard) && place.on(MeshDim::Tp)->dim == 0
             ? chunk_of(rows, mesh, MeshDim::Tp)
             : rows;
}

// Floats per token a decoder layer's forward saves for backward, by the ops of nn/ (each term
// names the tensor): the per-token widths are those of this rank's shards.
struct LayerWidths {
  int64_t residual;  // per residual-stream token (sequence-parallel tokens when sp shards them)
  int64_t block;     // per token inside the attention / MLP blocks
};

LayerWidths layer_widths(const models::LlamaForCausalLM& model, int64_t layer, const dist::DeviceMesh& mesh,
                         const ParallelOptions& options) {
  const auto& c = model.config();
  const std::string p = "model.layers." + std::to_string(layer) + ".";
  const int64_t h = c.hidden_size;
  const int64_t qd = local_rows(model, p + "self_attn.q_proj.weight", mesh);
  const int64_t kvd = local_rows(model, p + "self_attn.k_proj.weight", mesh);
  const bool repeated = qd > kvd;  // grouped-query attention
  LayerWidths w{0, 0};
  // Each RMSNorm keeps its input and the normalised rows; its output is saved by the block's
  // projections. Under sequence parallelism the block saves the gathered output instead.
  if (options.sequence_parallel) {
    w.residual += 2 * (2 * h);
    w.block += 2 * h;
  } else {
    w.residual += 2 * (3 * h);
  }
  // RoPE's products save only cos and sin, so q and k are kept once, rotated, as the attention
  // kernel's inputs: the local kernel keeps k and v repeated up to the query heads (a copy when a
  // rank holds several kv heads, a view of one), ring attention keeps them contiguous as they
  // are. Then the kernel's output (o_proj reads it as a view), the log-sum-exp and the norms'
  // reciprocal RMS.
  const bool copies_repeated = repeated && kvd > c.head_dim && mesh.size(MeshDim::Cp) == 1;
  w.block += qd + 2 * (copies_repeated ? qd : kvd) + qd + qd / c.head_dim;
  w.residual += 2;
  if (!c.is_moe_layer(layer)) {
    // gate, silu(gate), up and their product, saved by silu, the product and down_proj.
    w.block += 4 * local_rows(model, p + "mlp.gate_proj.weight", mesh);
    return w;
  }
  // MoE: router logits and probabilities, then for each of the k rows a token sends to this
  // rank's experts: the gathered input, gate‖up, silu, the product, the expert output and its
  // weighted copy.
  const auto& m = *c.moe;
  const auto& experts = model.placement(p + "mlp.experts.gate_up_proj");
  const int64_t local_experts = experts.is(MeshDim::Ep, nn::Placement::Kind::Shard) ? chunk_of(m.num_experts, mesh, MeshDim::Ep)
                                                                                     : m.num_experts;
  // Token dispatch brings each rank its experts' share of every rank's rows; router masking
  // keeps only the local experts' rows.
  const bool masked = options.ep_size > 1 && options.ep_mode == EpMode::AllReduce;
  const double share = masked ? static_cast<double>(local_experts) / m.num_experts : 1.0;
  const int64_t inner = local_rows(model, p + "mlp.experts.gate_up_proj", mesh) == 2 * m.intermediate_size
                            ? m.intermediate_size
                            : m.intermediate_size / mesh.group(mesh.expert_tensor_dim()).size();
  w.block += 2 * m.num_experts +
             static_cast<int64_t>(share * static_cast<double>(m.num_experts_per_tok * (3 * h + 4 * inner)));
  return w;
}

// What a pipeline rank holds at its fullest, walking its schedule: each forward keeps its
// stage's activations until the backward (under a split backward, until the weights' gradient)
// frees them; the stage link keeps every message it sent until the step ends; a backward also
// holds the gradients in flight through a layer (`backward_working_set`).
struct Held {
  int64_t bytes = 0;
  bool gradients = false;  // whether weight gradients exist by then
};

Held most_held(const ParallelModel& pm, const std::map<int64_t, int64_t>& saved_by_stage, int64_t micro_batches,
               int64_t message, int64_t backward_working_set) {
  const auto& mesh = pm.mesh();
  const int64_t last_stage = pm.pipeline_stages() - 1;
  using Kind = PipelineAction::Kind;
  Held most;
  int64_t held = 0, sent = 0;
  bool gradients = false;
  for (auto& a : pipeline_actions(pm.pipeline().schedule, mesh.coordinate(MeshDim::Pp), mesh.size(MeshDim::Pp),
                                  micro_batches, pm.pipeline().virtual_stages)) {
    if (a.kind == Kind::Forward) {
      held += saved_by_stage.at(a.stage);
      if (a.stage != last_stage) sent += message;
      if (held + sent > most.bytes) most = {held + sent, gradients};
      continue;
    }
    if (a.kind != Kind::BackwardWeight) {  // the input's gradient flows back through the stage
      if (held + sent + backward_working_set > most.bytes) most = {held + sent + backward_working_set, true};
      if (a.stage != 0) sent += message;
    }
    if (a.kind != Kind::BackwardInput) {
      held -= saved_by_stage.at(a.stage);
      gradients = true;
    }
  }
  return most;
}

}  // namespace

int64_t MemoryEstimate::peak() const {
  return parameters + optimizer_state + (gradients_at_peak ? gradients : 0) + activations + loss_buffers + gathered +
         comm_buffers;
}

MemoryEstimate estimate_memory(ParallelModel& pm, const StepShape& shape, const ParallelOptions& options) {
  auto& model = pm.model();
  const auto& mesh = pm.mesh();
  const auto& c = model.config();
  MemoryEstimate e;
  for (auto& [name, p] : model.named_params()) e.parameters += p.numel() * kFloat;
  e.gradients = e.parameters;
  e.optimizer_state = 2 * e.parameters;
  if (pm.ddp()) e.comm_buffers = e.gradients;
  if (const Fsdp* fsdp = pm.fsdp()) {
    // Full units: the root for the whole forward, the current layer and the prefetched next.
    std::vector<int64_t> full;
    for (auto& unit : fsdp->units())
      full.push_back(std::accumulate(unit.flat_sizes.begin(), unit.flat_sizes.end(), int64_t{0}) * kFloat);
    const int64_t largest_layer_unit = full.size() > 1 ? *std::max_element(full.begin() + 1, full.end()) : 0;
    e.gathered = full[0] + 2 * largest_layer_unit;
  }
  e.gradients_at_peak = shape.accumulation > 1;

  // Tokens of one micro-batch on this rank: the sequence is split over cp and sp (Ulysses), and
  // the residual stream also over tp under sequence parallelism.
  const int64_t block_tokens = shape.micro_batch * shape.seq_len / (mesh.size(MeshDim::Cp) * mesh.size(MeshDim::Sp));
  const int64_t residual_tokens = options.sequence_parallel ? block_tokens / mesh.size(MeshDim::Tp) : block_tokens;
  const int64_t every = options.ac_mode == AcMode::Full ? 1 : options.ac_mode == AcMode::Selective ? options.ac_every : 0;
  // One micro-batch's activations in each stage this rank holds (the whole model without pp).
  const int64_t pp = mesh.size(MeshDim::Pp), last_stage = pm.pipeline_stages() - 1;
  const auto stages = pm.held_stages();
  std::map<int64_t, int64_t> saved_by_stage;
  int64_t largest_layer = 0, largest_mlp_width = 0;
  for (auto stage : stages) {
    const auto [begin, end] = pm.stage_layers(stage);
    int64_t& saved = saved_by_stage[stage];
    for (int64_t l = begin; l < end; ++l) {
      const auto w = layer_widths(model, l, mesh, options);
      const std::string mlp = "model.layers." + std::to_string(l) + ".mlp.";
      largest_mlp_width =
          std::max(largest_mlp_width,
                   c.is_moe_layer(l) ? c.moe->intermediate_size : local_rows(model, mlp + "gate_proj.weight", mesh));
      const int64_t full = (w.residual * residual_tokens + w.block * block_tokens) * kFloat;
      largest_layer = std::max(largest_layer, full);
      // A checkpointed layer keeps only its input, and runs again in backward.
      saved += every > 0 && l % every == 0 ? c.hidden_size * residual_tokens * kFloat : full;
    }
    // RoPE's cos and sin, and on the last stage the final norm (input, normalised rows, output).
    saved += 2 * c.head_dim * block_tokens * kFloat;
    if (stage == last_stage) saved += 3 * c.hidden_size * residual_tokens * kFloat;
  }
  if (pp > 1) {
    // The gradients in flight through a layer's backward (the layer output's and the
    // residual's, one of the MLP's width) and the gradient received for the stage's output.
    const int64_t message = c.hidden_size * residual_tokens * kFloat;
    const int64_t working_set = 3 * message + largest_mlp_width * block_tokens * kFloat;
    const auto held = most_held(pm, saved_by_stage, shape.accumulation, message, working_set);
    e.activations = held.bytes;
    e.gradients_at_peak = held.gradients;
  } else {
    e.activations = saved_by_stage.at(0);
  }
  // The loss's widest moment (on the last stage alone): at the start of backward the
  // log-softmax, the gradient of the loss per logit and that of the log-softmax (3 V);
  // gathering tp-sharded logits over the vocab also holds the local logits, their transposed and
  // padded copies and the gathered buffer before its reordering (3 V / tp + 3 V). A
  // vocab-parallel loss keeps V / tp.
  if (stages.back() == last_stage) {
    const int64_t local_vocab = chunk_of(c.vocab_size, mesh, MeshDim::Tp);
    const bool gathered_logits = mesh.size(MeshDim::Tp) > 1 && !pm.tp_report().logits_vocab_sharded &&
                                 model.placement(model.lm_head ? "lm_head.weight" : "model.embed_tokens.weight")
                                     .is(MeshDim::Tp, nn::Placement::Kind::Shard);
    const int64_t widths = pm.tp_report().logits_vocab_sharded ? 3 * local_vocab
                           : gathered_logits                  ? 3 * c.vocab_size + 3 * local_vocab
                                                              : 3 * c.vocab_size;
    e.loss_buffers = widths * block_tokens * kFloat;
  }
  // Recomputing a checkpointed layer in backward holds its activations again, once the loss's
  // buffers are gone, with the gradients in flight through it (the layer output's and the
  // residual's, one of the MLP's width).
  if (every > 0) {
    const int64_t in_flight = (2 * c.hidden_size * residual_tokens + largest_mlp_width * block_tokens) * kFloat;
    e.activations += std::max<int64_t>(0, largest_layer + in_flight - e.loss_buffers);
  }
  return e;
}

}  // namespace meshtrain::parallel

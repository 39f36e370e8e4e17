#include "parallel/traffic_plan.h"

#include <algorithm>
#include <set>

#include "dist/comm_autograd.h"
#include "dist/device_mesh.h"
#include "parallel/fsdp.h"
#include "parallel/grad_sync_plan.h"
#include "parallel/tensor_parallel.h"

namespace meshtrain::parallel {

namespace {

// As dist/collectives.cpp counts: all-reduce 2·(n−1)/n·M, all-gather and reduce-scatter
// (n−1)/n of the full tensor, integer bytes.
uint64_t ring_share(uint64_t bytes, int64_t n) { return bytes * static_cast<uint64_t>(n - 1) / static_cast<uint64_t>(n); }
uint64_t all_reduce(uint64_t bytes, int64_t n) { return 2 * ring_share(bytes, n); }
// An uneven gather pads every rank's part to the largest.
uint64_t padded(int64_t total, int64_t n, uint64_t row_bytes) {
  return static_cast<uint64_t>(dist::chunk_sizes(total, n).front() * n) * row_bytes;
}

}  // namespace

TrafficEstimate estimate_traffic(ParallelModel& pm, const StepShape& shape, const ParallelOptions& options) {
  const auto& mesh = pm.mesh();
  auto& model = pm.model();
  const auto& c = model.config();
  TrafficEstimate t;
  auto add = [&](MeshDim dim, uint64_t bytes) {
    if (mesh.group(dim).size() > 1 && bytes > 0) t.bytes[dim] += bytes;
  };
  const int64_t micro = shape.accumulation;
  auto n = [&](MeshDim dim) { return static_cast<int64_t>(mesh.group(dim).size()); };

  // The step's scalars: the target count over dp, the loss (and MoE statistics) over the
  // token-holding ranks, the preemption flag over the world, a norm per set of shard dims.
  add(MeshDim::Dp, all_reduce(8, n(MeshDim::Dp)));
  add(MeshDim::World, all_reduce(4, n(MeshDim::World)));
  const int64_t experts = c.moe ? c.moe->num_experts : 0;
  add(MeshDim::DpCpSp, all_reduce(8 * (1 + (c.moe ? 3 + c.num_moe_layers() * experts : 0)), n(MeshDim::DpCpSp)));
  if (c.moe) add(MeshDim::DpCpSp, micro * all_reduce(8 * (2 * experts + 1), n(MeshDim::DpCpSp)));
  std::set<std::vector<MeshDim>> shard_sets;
  for (auto& [name, p] : model.named_params()) {
    const auto& place = model.placement(name);
    std::vector<MeshDim> dims;
    for (size_t d = 0; d < place.placements.size(); ++d)
      if (place.placements[d].kind == nn::Placement::Kind::Shard) dims.push_back(place.mesh_dims[d]);
    shard_sets.insert(dims);
  }
  for (auto& dims : shard_sets)
    for (auto dim : dims) add(dim, all_reduce(8, n(dim)));

  // Gradients: DDP's buckets and the all-reduces after backward once per step; FSDP per unit and
  // micro-batch: forward gathers, backward re-gathers (reshard_after_forward) and reduce-scatters.
  const auto& plan = pm.sync_plan();
  for (auto& sync : plan.syncs())
    if (sync.mechanism == SyncMechanism::DdpBuckets || sync.mechanism == SyncMechanism::AllReduce)
      add(sync.dim, plan.bytes_sent(sync, mesh));
  if (const Fsdp* fsdp = pm.fsdp()) {
    const int64_t shard = n(MeshDim::DpShardCp);
    const auto me = static_cast<size_t>(fsdp->shard_group().rank());
    for (size_t u = 0; u < fsdp->units().size(); ++u) {
      const auto& sizes = fsdp->units()[u].flat_sizes;
      const uint64_t gathered = static_cast<uint64_t>(*std::max_element(sizes.begin(), sizes.end()) * shard) * 4;
      const uint64_t gathers = u > 0 && fsdp->reshard_after_forward() ? 2 : 1;  // the root is not re-gathered
      add(MeshDim::DpShardCp, micro * (gathers + 1) * ring_share(gathered, shard));
      add(MeshDim::DpReplicateSp, micro * all_reduce(static_cast<uint64_t>(sizes[me]) * 4, n(MeshDim::DpReplicateSp)));
    }
  }

  // Tokens of one micro-batch on this rank, and one hidden state of them.
  const int64_t tokens = shape.micro_batch * shape.seq_len / (n(MeshDim::Cp) * n(MeshDim::Sp));
  const uint64_t hidden = static_cast<uint64_t>(tokens * c.hidden_size) * 4;

  // The decoder layers of this rank's stages (all of them without pp), and whether it holds the
  // embedding (first stage) and the head (last).
  const auto stages = pm.held_stages();
  const int64_t last_stage = pm.pipeline_stages() - 1;
  const bool first = stages.front() == 0, last = stages.back() == last_stage;
  std::vector<int64_t> held;
  for (auto stage : stages)
    for (auto [l, end] = pm.stage_layers(stage); l < end; ++l) held.push_back(l);
  const auto layers = static_cast<int64_t>(held.size());
  const auto moe_layers = std::count_if(held.begin(), held.end(), [&](int64_t l) { return c.is_moe_layer(l); });
  if (n(MeshDim::Pp) > 1) {
    // Each micro-batch's hidden states leave every stage but the last, their gradients every
    // stage but the first (the residual stream's shard: / tp under sequence parallelism); the
    // loss and the gradient norm are summed over the stages.
    const int64_t sent_stages = static_cast<int64_t>(stages.size()) * 2 - (first ? 1 : 0) - (last ? 1 : 0);
    const uint64_t activation = options.sequence_parallel ? hidden / static_cast<uint64_t>(n(MeshDim::Tp)) : hidden;
    add(MeshDim::Pp, micro * static_cast<uint64_t>(sent_stages) * activation + 2 * all_reduce(8, n(MeshDim::Pp)));
    if (c.moe) t.unmodelled.push_back("MoE routing sums over pp");
  }
  if (n(MeshDim::Tp) > 1) {
    const int64_t tp = n(MeshDim::Tp);
    const bool sp = options.sequence_parallel;
    if (options.tp_plan) t.unmodelled.push_back("a custom tp_plan (the default plan's blocks are counted)");
    // Each attention and dense MLP block: f and g (all-reduces), or under sequence parallelism
    // an all-gather in and a reduce-scatter out, each with its conjugate in backward. A MoE
    // block sees the tokens whole over tp and sends nothing on it unless it gathers a sequence
    // or splits its experts inside.
    const uint64_t per_block = sp ? 4 * ring_share(hidden, tp) : 2 * all_reduce(hidden, tp);
    const int64_t blocks = layers + (layers - moe_layers);
    add(MeshDim::Tp, micro * static_cast<uint64_t>(blocks) * per_block);
    for (auto l : held) {
      if (!c.is_moe_layer(l)) continue;
      const auto& experts = model.placement("model.layers." + std::to_string(l) + ".mlp.experts.gate_up_proj");
      using enum nn::Placement::Kind;
      if (sp || experts.is(MeshDim::Tp, Shard) || experts.is(MeshDim::Etp, Shard))
        t.unmodelled.push_back("MoE blocks gathering the sequence or splitting experts over tp");
      break;
    }
    // lm_head (colwise): its input by f (sp: all-gather, reduce-scatter back); the logits
    // gathered over the vocab, or a vocab-parallel loss's max and sums.
    uint64_t head = sp ? 2 * ring_share(hidden, tp) : all_reduce(hidden, tp);
    if (pm.tp_report().logits_vocab_sharded)
      head += all_reduce(static_cast<uint64_t>(tokens) * 4, tp) + all_reduce(static_cast<uint64_t>(tokens) * 8, tp);
    else
      head += ring_share(padded(c.vocab_size, tp, static_cast<uint64_t>(tokens) * 4), tp);
    // sp: the replicated embedding's output is cut to the sequence shard (backward: gathered).
    const uint64_t embedding = sp ? ring_share(hidden, tp) : 0;
    add(MeshDim::Tp, micro * ((last ? head : 0) + (first ? embedding : 0)));
  }
  if (n(MeshDim::Cp) > 1) {
    const int64_t cp = n(MeshDim::Cp);
    // K and V of this rank's rows travel as one buffer: the ring passes it cp − 1 times in
    // forward and again in backward, plus the fp32 dK/dV cp times; the all-gather strategy
    // gathers it in both passes and reduce-scatters the gradient.
    const int64_t kv_width = model.placement("model.layers.0.self_attn.k_proj.weight").global_shape[0] / n(MeshDim::Tp);
    const uint64_t kv = static_cast<uint64_t>(2 * tokens * kv_width) * 4;
    const uint64_t per_layer = options.cp_comm_strategy == CpCommStrategy::Ring
                                   ? (2 * (cp - 1) + cp) * kv
                                   : 3 * ring_share(kv * cp, cp);
    add(MeshDim::Cp, micro * static_cast<uint64_t>(layers) * per_layer);
  }
  if (n(MeshDim::Sp) > 1) t.unmodelled.push_back("Ulysses all-to-all on sp");
  if (options.ep_size > 1 && c.moe) {
    const int64_t ep = n(MeshDim::Ep), k = c.moe->num_experts_per_tok;
    const uint64_t routed = static_cast<uint64_t>(tokens * k);
    uint64_t per_layer;
    if (options.ep_mode == EpMode::AllReduce) {
      // Every rank holds every token: the experts' outputs summed in forward, the gradients of
      // the tokens and of their routing weights in backward.
      per_layer = 2 * all_reduce(hidden, ep) + all_reduce(routed * 4, ep);
    } else {
      // The counts, then the routed rows out and back in forward and again in backward; the
      // rows that stay local are not sent, so this assumes routing spread evenly over ranks.
      const uint64_t counts = static_cast<uint64_t>((ep - 1) * (c.moe->num_experts / ep)) * 8;
      per_layer = counts + 4 * ring_share(routed * static_cast<uint64_t>(c.hidden_size) * 4, ep);
      t.estimated[MeshDim::Ep] = "the all-to-all rows assume tokens routed evenly over the ep ranks";
    }
    add(MeshDim::Ep, micro * static_cast<uint64_t>(moe_layers) * per_layer);
  }
  if (options.ac_mode != AcMode::None && (n(MeshDim::Tp) > 1 || n(MeshDim::Cp) > 1 || options.ep_size > 1))
    t.unmodelled.push_back("collectives re-issued by activation checkpointing's recomputation");
  return t;
}

}  // namespace meshtrain::parallel

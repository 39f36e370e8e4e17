// meshtrain plan: each rank's mesh coordinates and the ranks of its groups, for a world size
// and parallel sizes; with --config_name one rank's gradient-sync plan, predicted memory and
// bytes sent per step, or, given no layout, every layout of the world ranked by them. Nothing is
// started: the model is laid out on a mesh whose groups have no backend.
#include <algorithm>
#include <cstdio>
#include <iostream>

#include "dist/device_mesh.h"
#include "parallel/grad_sync_plan.h"
#include "parallel/pipeline_stage.h"
#include "parallel/traffic_plan.h"
#include "tools/commands.h"
#include "tools/flags.h"
#include "tools/layout_catalog.h"
#include "tools/parallel_flags.h"
#include "util/check.h"

namespace meshtrain::tools {

namespace {

// The planner lays models out and measures them on the CPU, whatever --device says.
parallel::ParallelOptions plan_options(const Flags& flags) {
  auto o = parallel_options_from(flags);
  o.device = c10::kCPU;
  return o;
}

// Which parameters are reduced over which group, how, and the bytes rank `rank` sends for them.
void print_sync_plan(const std::string& config_path, const dist::MeshSizes& sizes, int rank,
                     const parallel::ParallelOptions& options) {
  auto mesh = std::make_shared<dist::DeviceMesh>(sizes, rank);
  mesh->create_layout_groups();
  auto model = std::make_shared<models::LlamaForCausalLM>(models::LlamaConfig::load(config_path));
  parallel::ParallelModel pm(model, mesh, options);
  const auto& plan = pm.sync_plan();
  std::printf("gradient sync of rank %d (fp32 gradients):\n  %-48s %-16s %-26s %12s\n", rank, "parameter", "group",
              "mechanism", "bytes/step");
  uint64_t total = 0;
  for (auto& sync : plan.syncs()) {
    const auto bytes = plan.bytes_sent(sync, *mesh);
    total += bytes;
    std::printf("  %-48s %-16s %-26s %12llu\n", sync.param.c_str(), name_of(sync.dim), parallel::name_of(sync.mechanism),
                static_cast<unsigned long long>(bytes));
  }
  std::printf("  %zu reductions, %llu bytes sent per step by rank %d\n", plan.syncs().size(),
              static_cast<unsigned long long>(total), rank);
}

// The pipeline stages: their ranks, decoder layers, and which holds the embedding and the head.
void print_stages(const std::string& config_path, const dist::MeshSizes& sizes, const parallel::ParallelOptions& o) {
  const auto config = models::LlamaConfig::load(config_path);
  const auto split =
      parallel::split_stages(config.num_hidden_layers, sizes.pp, o.pp.layers_per_stage, o.pp.virtual_stages);
  const int64_t per_stage = sizes.product() / sizes.pp;
  std::printf("pipeline: %lld stages, schedule %s\n", (long long)split.size(),
              parallel::pipeline_schedule_name(o.pp.schedule));
  for (size_t s = 0; s < split.size(); ++s) {
    std::string extra;
    if (s == 0) extra += " + embed_tokens";
    if (s + 1 == split.size()) extra += config.tie_word_embeddings ? " + norm, tied head (embed_tokens)" : " + norm, lm_head";
    const auto rank = static_cast<int64_t>(s) % sizes.pp;  // stage s on pp rank s mod pp_size
    std::printf("  stage %zu (ranks %lld-%lld): layers %lld-%lld%s\n", s, (long long)(rank * per_stage),
                (long long)((rank + 1) * per_stage - 1), (long long)split[s].begin, (long long)split[s].end - 1,
                extra.c_str());
  }
}

double mib(int64_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

struct Prediction {
  parallel::MemoryEstimate memory;
  parallel::MemoryEstimate other_ac;  // with full activation checkpointing, or without the one asked
  parallel::TrafficEstimate traffic;
  uint64_t total_bytes() const {
    uint64_t total = 0;
    for (auto& [dim, bytes] : traffic.bytes) total += bytes;
    return total;
  }
};

Prediction predict(const std::string& config_path, const dist::MeshSizes& sizes, int rank,
                   const parallel::ParallelOptions& options, const parallel::StepShape& shape) {
  auto mesh = std::make_shared<dist::DeviceMesh>(sizes, rank);
  mesh->create_layout_groups();
  auto model = std::make_shared<models::LlamaForCausalLM>(models::LlamaConfig::load(config_path));
  parallel::ParallelModel pm(model, mesh, options);
  pm.check_sequence_length(shape.seq_len);
  auto other = options;
  other.ac_mode = options.ac_mode == parallel::AcMode::None ? parallel::AcMode::Full : parallel::AcMode::None;
  return {parallel::estimate_memory(pm, shape, options), parallel::estimate_memory(pm, shape, other),
          parallel::estimate_traffic(pm, shape, options)};
}

void print_prediction(const Prediction& p, int rank) {
  const auto& m = p.memory;
  std::printf("predicted memory of rank %d (fp32 tensors, MiB):\n", rank);
  const std::pair<const char*, int64_t> rows[] = {
      {"parameters", m.parameters},     {"gradients", m.gradients},   {"optimizer state", m.optimizer_state},
      {"activations", m.activations},   {"logits and loss", m.loss_buffers}, {"FSDP gathered units", m.gathered},
      {"DDP buckets", m.comm_buffers}};
  for (auto& [name, bytes] : rows) std::printf("  %-22s %10.2f\n", name, mib(bytes));
  std::printf("  %-22s %10.2f  (start of backward: all but the gradients%s)\n",
              "peak", mib(m.peak()), m.gradients_at_peak ? ", which accumulation holds too" : "");
  const bool checkpointed = p.other_ac.activations > m.activations;
  std::printf("  %s: activations %.2f, peak %.2f\n",
              checkpointed ? "without activation checkpointing" : "with full activation checkpointing",
              mib(p.other_ac.activations), mib(p.other_ac.peak()));
  std::printf("predicted bytes sent per step by rank %d:\n", rank);
  for (auto& [dim, bytes] : p.traffic.bytes)
    std::printf("  %-16s %14llu\n", name_of(dim), static_cast<unsigned long long>(bytes));
  for (auto& what : p.traffic.unmodelled) std::printf("  not predicted: %s\n", what.c_str());
  for (auto& [dim, why] : p.traffic.estimated) std::printf("  estimated on %s: %s\n", name_of(dim), why.c_str());
}

nlohmann::json prediction_json(const Prediction& p) {
  const auto& m = p.memory;
  nlohmann::json bytes = nlohmann::json::object();
  for (auto& [dim, sent] : p.traffic.bytes) bytes[name_of(dim)] = sent;
  nlohmann::json estimated = nlohmann::json::object();
  for (auto& [dim, why] : p.traffic.estimated) estimated[name_of(dim)] = why;
  return {{"memory", {{"parameters", m.parameters}, {"gradients", m.gradients}, {"optimizer_state", m.optimizer_state},
                      {"activations", m.activations}, {"loss_buffers", m.loss_buffers}, {"gathered", m.gathered},
                      {"comm_buffers", m.comm_buffers}, {"peak", m.peak()}}},
          {"bytes_sent_per_step", bytes},
          {"other_ac", {{"activations", p.other_ac.activations}, {"peak", p.other_ac.peak()}}},
          {"unmodelled", p.traffic.unmodelled},
          {"estimated", estimated}};
}

// Every layout of the world that the model and sequence length admit (tools/layout_catalog.h),
// ranked by predicted peak memory, then bytes sent; "≥" marks bytes that leave traffic out.
void rank_layouts(const std::string& config_path, int64_t world, const parallel::StepShape& shape,
                  const parallel::ParallelOptions& base, double budget_gb) {
  struct Row {
    std::string layout;
    Prediction p;
  };
  std::vector<Row> rows;
  for (const auto& layout : valid_layouts(models::LlamaConfig::load(config_path), world, shape.seq_len))
    rows.push_back({layout.name(), predict(config_path, layout.mesh_sizes(), 0, layout.options(base), shape)});
  std::stable_sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
    return a.p.memory.peak() != b.p.memory.peak() ? a.p.memory.peak() < b.p.memory.peak()
                                                  : a.p.total_bytes() < b.p.total_bytes();
  });
  std::printf("%zu layouts of %lld ranks, by predicted peak memory of rank 0:\n", rows.size(), (long long)world);
  std::printf("  %-28s %12s %18s%s\n", "layout", "peak MiB", "bytes/step", budget_gb > 0 ? "  fits" : "");
  for (auto& row : rows) {
    const bool fits = static_cast<double>(row.p.memory.peak()) <= budget_gb * (1 << 30);
    std::printf("  %-28s %12.2f %2s%16llu%s\n", row.layout.c_str(), mib(row.p.memory.peak()),
                row.p.traffic.unmodelled.empty() ? "" : ">=", static_cast<unsigned long long>(row.p.total_bytes()),
                budget_gb > 0 ? (fits ? "  yes" : "  no") : "");
  }
}

}  // namespace

int run_plan(const Args& argv) {
  auto specs = parallel_flag_specs();
  specs.insert(specs.begin(), {{"world", "number of ranks (required)"},
                               {"config_name", "HF config.json: also print a rank's gradient sync, predicted memory "
                                               "and bytes per step; with no layout flags, rank every layout"},
                               {"rank", "the rank whose plan is printed (default 0)"},
                               {"seq_len", "tokens per training window (default 256)"},
                               {"per_device_train_batch_size", "rows per micro-batch and rank (default 8)"},
                               {"gradient_accumulation_steps", "micro-batches per step (default 1)"},
                               {"memory_budget", "GiB per rank: mark the ranked layouts that fit"},
                               {"json", "print the prediction as JSON", true}});
  Flags flags("plan", specs, argv);
  if (flags.help_requested()) {
    std::cout << flags.usage("--world N [--dp_replicate_size R --dp_shard_size S --tp_size T ...] [--config_name F]");
    return 0;
  }
  const int64_t world = flags.get_int("world", 0);
  if (world < 1) throw UsageError("meshtrain plan: --world must be a positive integer");
  parallel::StepShape shape{flags.get_int("per_device_train_batch_size", 8), flags.get_int("seq_len", 256),
                            flags.get_int("gradient_accumulation_steps", 1)};
  if (shape.micro_batch < 1 || shape.seq_len < 2 || shape.accumulation < 1)
    throw UsageError(str_cat("meshtrain plan: need --per_device_train_batch_size >= 1, --seq_len >= 2 and "
                             "--gradient_accumulation_steps >= 1; got ", shape.micro_batch, ", ", shape.seq_len, ", ",
                             shape.accumulation));
  const double budget = flags.get_double("memory_budget", 0.0);
  if (flags.has("memory_budget") && !(budget > 0)) throw UsageError(str_cat("--memory_budget must be positive GiB, got ", budget));
  if (flags.has("bf16"))
    throw UsageError("meshtrain plan: --bf16 is not modelled yet; the planner predicts fp32 runs (leave --bf16 out)");
  bool layout_given = false;
  for (auto name : {"pp_size", "dp_replicate_size", "dp_shard_size", "tp_size", "cp_size", "sp_size", "ep_size"})
    layout_given |= flags.has(name);
  if (flags.has("config_name") && !layout_given && world > 1) {
    rank_layouts(resolve_path(flags.get("config_name", "")), world, shape, plan_options(flags), budget);
    return 0;
  }
  const auto sizes = dist::resolve_mesh_sizes(mesh_sizes_from(flags), world);
  const int64_t rank = flags.get_int("rank", 0);
  if (rank < 0 || rank >= world) throw UsageError(str_cat("meshtrain plan: --rank must be in [0, ", world, "), got ", rank));
  if (flags.has("json")) {
    if (!flags.has("config_name")) throw UsageError("meshtrain plan: --json needs --config_name");
    if (sizes.pp > 1)
      parallel::check_pipeline_micro_batches(plan_options(flags).pp.schedule, sizes.pp, shape.accumulation);
    std::cout << prediction_json(predict(resolve_path(flags.get("config_name", "")), sizes, static_cast<int>(rank),
                                         plan_options(flags), shape))
                     .dump(1)
              << "\n";
    return 0;
  }
  std::cout << "mesh " << (sizes.pp > 1 ? "pp=" + std::to_string(sizes.pp) + " " : "") << "dp_replicate=" << sizes.dp_replicate << " dp_shard=" << sizes.dp_shard << " cp=" << sizes.cp
            << " sp=" << sizes.sp << " tp=" << sizes.tp << (sizes.ep > 1 ? " ep=" + std::to_string(sizes.ep) : "")
            << "\n";
  auto ranks_text = [](const std::vector<int>& ranks) {
    std::string s = "[";
    for (size_t i = 0; i < ranks.size(); ++i) {
      if (i) s += ',';
      s += std::to_string(ranks[i]);
    }
    return s + "]";
  };
  for (int r = 0; r < world; ++r) {
    dist::DeviceMesh mesh(sizes, r);
    std::cout << "rank " << r << ":";
    // pp is shown only when the mesh has stages.
    for (auto dim : kMeshDims)
      if (dim != MeshDim::Pp || sizes.pp > 1) std::cout << " " << name_of(dim) << "=" << mesh.coordinate(dim);
    std::cout << " |";
    for (auto dim : kMeshDims)
      if (dim != MeshDim::Pp || sizes.pp > 1) std::cout << " " << name_of(dim) << ranks_text(mesh.group_ranks(dim));
    for (auto dim : kFlattenedDims) std::cout << " " << name_of(dim) << ranks_text(mesh.group_ranks(dim));
    if (sizes.ep > 1)
      for (auto dim : kExpertDims)
        if (sizes.ep_in_tp || dim != MeshDim::Etp) std::cout << " " << name_of(dim) << ranks_text(mesh.group_ranks(dim));
    std::cout << "\n";
  }
  if (flags.has("config_name")) {
    const auto config = resolve_path(flags.get("config_name", ""));
    const auto options = plan_options(flags);
    if (sizes.pp > 1) print_stages(config, sizes, options);
    print_sync_plan(config, sizes, static_cast<int>(rank), options);
    if (sizes.pp > 1) {
      try {
        parallel::check_pipeline_micro_batches(options.pp.schedule, sizes.pp, shape.accumulation);
      } catch (const UsageError& e) {  // the layout is shown; the step it would run is not valid
        std::printf("memory and traffic are not predicted: %s\n", e.what());
        return 0;
      }
    }
    print_prediction(predict(config, sizes, static_cast<int>(rank), options, shape), static_cast<int>(rank));
  }
  return 0;
}

}  // namespace meshtrain::tools

// The catalogue of parallel layouts: a Layout (mesh sizes, Megatron sequence parallelism, expert
// parallelism and its mode), its short name ("dp_shard2xtp2+sp", parsed back by parse_layout), the
// train flags that select it, and every layout of a world size that a model config admits.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dist/device_mesh.h"
#include "models/llama_config.h"
#include "parallel/parallel_options.h"

namespace meshtrain::tools {

struct Layout {
  int64_t dp_replicate = 1, dp_shard = 1, cp = 1, sp = 1, tp = 1;  // sp: Ulysses
  bool sequence_parallel = false;                                   // Megatron, on the tp dim
  int64_t ep = 1;
  parallel::EpMode ep_mode = parallel::EpMode::AllToAll;  // meaningful only with ep > 1

  int64_t world() const { return dp_replicate * dp_shard * cp * sp * tp; }
  // Size-1 dims left out, in mesh order, then the options: "dp_shard2xtp2+sp",
  // "tp4xep2+ep_allreduce"; "single" for one rank.
  std::string name() const;
  // The train / launch flags that select this layout (accelerate's names, as parallel_flags.cpp).
  std::vector<std::string> flags() const;
  dist::MeshSizes mesh_sizes() const;
  // `base` (tp plan, activation checkpointing, ...) with this layout's sp / ep settings.
  parallel::ParallelOptions options(parallel::ParallelOptions base = {}) const;
  bool operator==(const Layout& other) const { return name() == other.name(); }
};

// The layout a name denotes: terms dp_replicateN, dp_shardN, cpN, spN, tpN, epN joined by 'x', in
// any order, each dim at most once, then options +sp (Megatron sequence parallelism, needs tp) and
// +ep_allreduce (router-masking expert parallelism, needs ep); "single" is one rank. A UsageError
// naming the problem otherwise.
Layout parse_layout(const std::string& name);

// Why `config` cannot be laid out so (on rank 0, exactly as train would: mesh sizes, heads over tp
// and sp, experts over ep, the tp plan, and sequences of seq_len tokens when seq_len > 0), or
// nothing when it can. The model is built but never initialised.
std::optional<std::string> layout_problem(const models::LlamaConfig& config, const Layout& layout,
                                          int64_t seq_len = 0);

// Every layout of exactly `world` ranks that layout_problem accepts: each ordered factorisation of
// world into dp_replicate, dp_shard, cp, sp, tp; with tp > 1 also with +sp; for MoE configs also
// each ep > 1 in either mode that the mesh admits. The one-rank layout only for world 1.
std::vector<Layout> valid_layouts(const models::LlamaConfig& config, int64_t world, int64_t seq_len = 0);

}  // namespace meshtrain::tools

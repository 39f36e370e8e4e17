// meshtrain plan: each rank's mesh coordinates and the ranks of its groups, for a world size
// and parallel sizes, and with --config_name one rank's gradient-sync plan, without starting
// anything (the model is laid out on a mesh whose groups have no backend).
#include <cstdio>
#include <iostream>

#include "dist/device_mesh.h"
#include "parallel/grad_sync_plan.h"
#include "tools/commands.h"
#include "tools/flags.h"
#include "tools/parallel_flags.h"
#include "util/check.h"

namespace meshtrain::tools {

namespace {

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

}  // namespace

int run_plan(const Args& argv) {
  auto specs = parallel_flag_specs();
  specs.insert(specs.begin(), {{"world", "number of ranks (required)"},
                               {"config_name", "HF config.json: also print the gradient-sync plan of a rank"},
                               {"rank", "the rank whose sync plan is printed (default 0)"}});
  Flags flags("plan", specs, argv);
  if (flags.help_requested()) {
    std::cout << flags.usage("--world N [--dp_replicate_size R --dp_shard_size S --tp_size T ...] [--config_name F]");
    return 0;
  }
  const int64_t world = flags.get_int("world", 0);
  if (world < 1) throw UsageError("meshtrain plan: --world must be a positive integer");
  const auto sizes = dist::resolve_mesh_sizes(mesh_sizes_from(flags), world);
  std::cout << "mesh dp_replicate=" << sizes.dp_replicate << " dp_shard=" << sizes.dp_shard << " cp=" << sizes.cp
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
    for (auto dim : kMeshDims) std::cout << " " << name_of(dim) << "=" << mesh.coordinate(dim);
    std::cout << " |";
    for (auto dim : kMeshDims) std::cout << " " << name_of(dim) << ranks_text(mesh.group_ranks(dim));
    for (auto dim : kFlattenedDims) std::cout << " " << name_of(dim) << ranks_text(mesh.group_ranks(dim));
    if (sizes.ep > 1)
      for (auto dim : kExpertDims)
        if (sizes.ep_in_tp || dim != MeshDim::Etp) std::cout << " " << name_of(dim) << ranks_text(mesh.group_ranks(dim));
    std::cout << "\n";
  }
  if (flags.has("config_name")) {
    const int64_t rank = flags.get_int("rank", 0);
    if (rank < 0 || rank >= world) throw UsageError(str_cat("meshtrain plan: --rank must be in [0, ", world, "), got ", rank));
    print_sync_plan(resolve_path(flags.get("config_name", "")), sizes, static_cast<int>(rank),
                    parallel_options_from(flags));
  }
  return 0;
}

}  // namespace meshtrain::tools

// meshtrain plan: each rank's mesh coordinates and the ranks of its groups, for a world size
// and parallel sizes, without starting anything.
#include <iostream>

#include "dist/device_mesh.h"
#include "tools/commands.h"
#include "tools/flags.h"
#include "tools/parallel_flags.h"
#include "util/check.h"

namespace meshtrain::tools {

int run_plan(const Args& argv) {
  auto specs = parallel_flag_specs();
  specs.insert(specs.begin(), {"world", "number of ranks (required)"});
  Flags flags("plan", specs, argv);
  if (flags.help_requested()) {
    std::cout << flags.usage("--world N [--dp_replicate_size R --dp_shard_size S --tp_size T ...]");
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
    for (size_t i = 0; i < ranks.size(); ++i) s += (i ? "," : "") + std::to_string(ranks[i]);
    return s + "]";
  };
  for (int r = 0; r < world; ++r) {
    dist::DeviceMesh mesh(sizes, r);
    std::cout << "rank " << r << ":";
    for (auto dim : dist::DeviceMesh::kDims) std::cout << " " << dim << "=" << mesh.coordinate(dim);
    std::cout << " |";
    for (auto dim : dist::DeviceMesh::kDims) std::cout << " " << dim << ranks_text(mesh.group_ranks(dim));
    for (auto& [name, dims] : dist::DeviceMesh::flattened()) std::cout << " " << name << ranks_text(mesh.group_ranks(name));
    if (sizes.ep > 1)
      for (auto name : dist::DeviceMesh::kExpertGroups)
        if (sizes.ep_in_tp || std::string(name) != "etp") std::cout << " " << name << ranks_text(mesh.group_ranks(name));
    std::cout << "\n";
  }
  return 0;
}

}  // namespace meshtrain::tools

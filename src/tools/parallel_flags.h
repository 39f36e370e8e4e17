// The parallelism flags every command shares (accelerate's names) and the runtime they start.
#pragma once
#include <memory>
#include <vector>

#include "dist/runtime.h"
#include "parallel/parallelize.h"
#include "tools/flags.h"

namespace meshtrain::tools {

std::vector<FlagSpec> parallel_flag_specs();
dist::MeshSizes mesh_sizes_from(const Flags& flags);
parallel::ParallelOptions parallel_options_from(const Flags& flags);
// Rank from the launcher's environment, rendezvous, mesh groups (time-out from --timeout), and the
// flight recorder (tools/flight_dump.h).
dist::Runtime start_runtime_from(const Flags& flags);
// --device and --backend for this rank (dist/device.h).
dist::RankDevice rank_device_from(const Flags& flags);
// Warns on stderr about tp_plan rules that matched nothing and layers no rule sharded.
void report_tp_plan(const parallel::ParallelModel& model);

}  // namespace meshtrain::tools

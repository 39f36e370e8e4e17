// The bytes each mesh dim's group sends in one training step on one rank, predicted without
// running it, counted as dist/collectives.h counts them: gradient sync from the sync plan, FSDP's
// gathers and reduce-scatters per unit, tensor / sequence parallel block collectives, the ring's
// K/V, the pipeline's activations and their gradients, and the step's scalar reductions. Traffic
// it cannot predict is named in `unmodelled`, traffic that depends on the data in `estimated`.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "parallel/memory_plan.h"

namespace meshtrain::parallel {

struct TrafficEstimate {
  std::map<MeshDim, uint64_t> bytes;   // per step, dims that send anything
  std::vector<std::string> unmodelled;  // e.g. "ulysses all-to-all"
  std::map<MeshDim, std::string> estimated;  // dims counted under an assumption the data may not meet
};

TrafficEstimate estimate_traffic(ParallelModel& model, const StepShape& shape, const ParallelOptions& options);

}  // namespace meshtrain::parallel

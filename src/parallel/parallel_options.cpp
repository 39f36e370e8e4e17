#include "parallel/parallel_options.h"

#include "util/check.h"

namespace meshtrain::parallel {

CpCommStrategy parse_cp_comm_strategy(const std::string& name) {
  if (name == "alltoall") return CpCommStrategy::Ring;
  if (name == "allgather") return CpCommStrategy::AllGather;
  throw UsageError(str_cat("Context Parallel does not support using ", name, " for kv shards rotation"));
}

const char* cp_comm_strategy_name(CpCommStrategy strategy) {
  return strategy == CpCommStrategy::Ring ? "alltoall" : "allgather";
}

EpMode parse_ep_mode(const std::string& name) {
  if (name == "alltoall") return EpMode::AllToAll;
  if (name == "allreduce") return EpMode::AllReduce;
  throw UsageError("--ep_mode must be alltoall or allreduce, got '" + name + "'");
}

AcMode parse_ac_mode(const std::string& name) {
  if (name == "none") return AcMode::None;
  if (name == "full") return AcMode::Full;
  if (name == "selective") return AcMode::Selective;
  throw UsageError("--ac_mode must be none, full or selective, got '" + name + "'");
}

at::ScalarType parse_reduce_dtype(const std::string& name) {
  if (name == "fp32") return at::kFloat;
  if (name == "bf16") return at::kBFloat16;
  throw UsageError("--reduce_dtype must be fp32 or bf16, got '" + name + "'");
}

}  // namespace meshtrain::parallel

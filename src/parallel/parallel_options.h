// What a user chooses about a layout besides the mesh sizes: the options of every parallel unit,
// parsed once from their flag names into enums.
#pragma once
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <optional>
#include <string>
#include <vector>

#include "parallel/pipeline_schedule.h"
#include "parallel/tp_plan.h"

namespace meshtrain::parallel {

// How context parallelism moves K/V. Upstream's --cp_comm_strategy spells them "alltoall" (a
// ring rotation: each step every rank passes the K/V it holds to rank + 1, as torch's all-to-all
// rotater does) -> Ring, with point-to-point send/recv overlapped with the block compute; and
// "allgather" -> AllGather: one all-gather of K/V up front, one reduce-scatter in backward.
enum class CpCommStrategy { Ring, AllGather };
// "alltoall" | "allgather"; anything else is a UsageError with upstream's message.
CpCommStrategy parse_cp_comm_strategy(const std::string& name);
const char* cp_comm_strategy_name(CpCommStrategy strategy);

// Expert parallelism: token dispatch over blocks of the dp_shard × cp ranks, or upstream's router
// masking over ranks of the tp group.
enum class EpMode { AllToAll, AllReduce };
// "alltoall" | "allreduce"; anything else is a UsageError listing them.
EpMode parse_ep_mode(const std::string& name);

// Activation checkpointing (torchtitan's modes): none, full (every decoder layer recomputed in
// backward) or selective (every ac_every-th layer).
enum class AcMode { None, Full, Selective };
// "none" | "full" | "selective"; anything else is a UsageError listing them.
AcMode parse_ac_mode(const std::string& name);

// The dtype gradients are summed in over ranks (FSDP's reduce-scatter, DDP's buckets, the sums
// after backward): "fp32" | "bf16"; anything else is a UsageError listing them.
at::ScalarType parse_reduce_dtype(const std::string& name);

// Pipeline parallelism over the pp dim: the schedule and how the layers split into stages.
struct PipelineOptions {
  PipelineSchedule schedule = PipelineSchedule::OneFOneB;
  int64_t virtual_stages = 1;             // stages per rank (interleaved schedules)
  std::vector<int64_t> layers_per_stage;  // one count per stage; empty: an even split
};

struct ParallelOptions {
  double ddp_bucket_cap_mb = 25.0;
  bool reshard_after_forward = true;
  std::optional<TpPlan> tp_plan;   // default: the model type's Hugging Face plan
  bool sequence_parallel = false;  // Megatron sequence parallelism on the tp dim
  bool loss_parallel = false;      // vocab-parallel cross entropy on tp-sharded logits
  CpCommStrategy cp_comm_strategy = CpCommStrategy::Ring;
  int64_t ep_size = 1;  // expert parallelism over MoE experts
  EpMode ep_mode = EpMode::AllToAll;
  AcMode ac_mode = AcMode::None;
  int64_t ac_every = 2;  // selective: checkpoint layers 0, k, 2k, ...
  bool bf16 = false;     // mixed precision (parallel/mixed_precision.h); fp32 otherwise
  at::ScalarType reduce_dtype = at::kFloat;
  c10::Device device = c10::kCPU;  // where parameters and activations live (dist/device.h)
  PipelineOptions pp;
};

}  // namespace meshtrain::parallel

#include "tools/parallel_flags.h"

#include <cstdlib>
#include <iostream>

#include "parallel/pipeline_stage.h"
#include "parallel/tensor_parallel.h"
#include "tools/flight_dump.h"
#include "util/check.h"

namespace meshtrain::tools {

std::vector<FlagSpec> parallel_flag_specs() {
  return {
      {"pp_size", "pipeline ranks, the outermost mesh dim: the decoder layers split into pp_size (x "
                  "pp_virtual_stages) contiguous stages (default 1)"},
      {"pipeline_parallel_schedule", "pipeline schedule: GPipe | 1F1B | Interleaved1F1B | InterleavedZeroBubble "
                                     "(default 1F1B); its micro-batches are the gradient_accumulation_steps, at "
                                     "least pp_size of them (interleaved: M of them in max(1, M / pp_size) equal "
                                     "rounds)"},
      {"pp_layers_per_stage", "decoder layers per pipeline stage: N, or N1,N2,... one per stage (default: an even "
                              "split)"},
      {"pp_virtual_stages", "pipeline stages per rank for the interleaved schedules, rank r holding stages r, "
                            "r + pp_size, ... (default 2; 1 for GPipe and 1F1B)"},
      {"dp_replicate_size", "data-parallel replicas: DDP, or HSDP with dp_shard (default 1)"},
      {"dp_shard_size", "FSDP shards; -1 takes what the other sizes leave (default 1)"},
      {"tp_size", "tensor-parallel size (default 1)"},
      {"cp_size", "context-parallel size (default 1)"},
      {"sp_size", "Ulysses sequence-parallel size (default 1)"},
      {"ep_size", "expert-parallel size: MoE experts sharded over ep ranks (default 1)"},
      {"ep_mode", "alltoall (tokens dispatched over ep ranks drawn from dp_shard x cp) | allreduce (ep ranks drawn "
                  "from the tp group, router masking, upstream's mode) (default alltoall)"},
      {"cp_comm_strategy", "how ring attention moves K/V: alltoall (ring send/recv, overlapped) | allgather "
                           "(default alltoall)"},
      {"tp_plan", "JSON file of module pattern -> tensor-parallel style (default: the model type's HF plan)"},
      {"sequence_parallel", "Megatron sequence parallelism on the tp dim: norms and the residual stream "
                            "sharded on the sequence (needs tp_size > 1)", true},
      {"loss_parallel", "vocab-parallel cross entropy: the logits stay sharded over tp (needs tp_size > 1)", true},
      {"gradient_checkpointing", "recompute every decoder layer in backward (HF's name for --ac_mode full)", true},
      {"ac_mode", "activation checkpointing: none | full (every layer) | selective (every --ac_every-th layer) "
                  "(default none)"},
      {"ac_every", "selective activation checkpointing: checkpoint layers 0, K, 2K, ... (default 2)"},
      {"bf16", "mixed precision as HF's --bf16: fp32 weights, gradients and optimizer state; matmuls and "
               "attention in bf16 (torch.autocast's rules); FSDP gathers weights in bf16", true},
      {"reduce_dtype", "dtype gradients are summed in over ranks (FSDP, DDP, tp/ep sums): fp32 | bf16 "
                       "(default fp32)"},
      {"fp16", "not supported (fp16 training needs loss scaling): use --bf16", true},
      {"device", "cpu | cuda: where this rank computes; each rank binds cuda:(LOCAL_RANK mod GPUs) (default cuda "
                 "when this build has CUDA and a GPU is visible, else cpu)"},
      {"backend", "collectives: gloo | nccl (default nccl on cuda, gloo on cpu)"},
      {"ddp_bucket_cap_mb", "DDP gradient bucket size in MiB (default 25)"},
      {"reshard_after_forward", "FSDP: free gathered layer weights after forward: true|false (default true)"},
      {"timeout", "seconds before a missing rank or a stalled collective ends the run "
                  "(default $MESHTRAIN_TIMEOUT_S or 300)"},
      flight_recorder_flag_spec(),
  };
}

dist::MeshSizes mesh_sizes_from(const Flags& flags) {
  dist::MeshSizes s;
  s.pp = flags.get_int("pp_size", 1);
  s.dp_replicate = flags.get_int("dp_replicate_size", 1);
  s.dp_shard = flags.get_int("dp_shard_size", 1);
  s.tp = flags.get_int("tp_size", 1);
  s.cp = flags.get_int("cp_size", 1);
  s.sp = flags.get_int("sp_size", 1);
  s.ep = flags.get_int("ep_size", 1);
  s.ep_in_tp = parallel::parse_ep_mode(flags.get("ep_mode", "alltoall")) == parallel::EpMode::AllReduce;
  return s;
}

parallel::ParallelOptions parallel_options_from(const Flags& flags) {
  parallel::ParallelOptions o;
  o.ddp_bucket_cap_mb = flags.get_double("ddp_bucket_cap_mb", o.ddp_bucket_cap_mb);
  if (o.ddp_bucket_cap_mb <= 0)
    throw UsageError(str_cat("--ddp_bucket_cap_mb must be positive, got ", o.ddp_bucket_cap_mb));
  auto boolean = [&](const std::string& name) {
    const auto v = flags.get(name, "false");
    if (v != "true" && v != "false") throw UsageError("--" + name + " must be true or false, got '" + v + "'");
    return v == "true";
  };
  o.reshard_after_forward = flags.has("reshard_after_forward") ? boolean("reshard_after_forward") : true;
  o.sequence_parallel = boolean("sequence_parallel");
  o.loss_parallel = boolean("loss_parallel");
  o.cp_comm_strategy = parallel::parse_cp_comm_strategy(flags.get("cp_comm_strategy", "alltoall"));
  o.ep_size = flags.get_int("ep_size", 1);
  if (o.ep_size < 1) throw UsageError(str_cat("--ep_size must be at least 1, got ", o.ep_size));
  o.ep_mode = parallel::parse_ep_mode(flags.get("ep_mode", "alltoall"));
  if (flags.has("tp_plan")) o.tp_plan = parallel::TpPlan::from_json_file(resolve_path(flags.get("tp_plan", "")));
  o.ac_mode = parallel::parse_ac_mode(flags.get("ac_mode", "none"));
  if (boolean("gradient_checkpointing")) {
    if (o.ac_mode == parallel::AcMode::Selective)
      throw UsageError("--gradient_checkpointing is --ac_mode full; it contradicts --ac_mode selective");
    o.ac_mode = parallel::AcMode::Full;
  }
  o.bf16 = boolean("bf16");
  if (flags.has("fp16"))
    throw UsageError("--fp16 is not supported: fp16 training needs loss scaling; use --bf16");
  o.reduce_dtype = parallel::parse_reduce_dtype(flags.get("reduce_dtype", "fp32"));
  o.device = rank_device_from(flags).device;
  o.ac_every = flags.get_int("ac_every", o.ac_every);
  if (o.ac_every < 1) throw UsageError(str_cat("--ac_every must be at least 1, got ", o.ac_every));
  if (flags.has("ac_every") && o.ac_mode != parallel::AcMode::Selective)
    throw UsageError("--ac_every applies to --ac_mode selective");
  const int64_t pp = flags.get_int("pp_size", 1);
  o.pp.schedule = parallel::parse_pipeline_schedule(flags.get("pipeline_parallel_schedule", "1F1B"));
  const bool interleaved = parallel::is_interleaved(o.pp.schedule);
  o.pp.virtual_stages = flags.get_int("pp_virtual_stages", interleaved ? 2 : 1);
  if (!interleaved && o.pp.virtual_stages != 1)
    throw UsageError(str_cat("--pp_virtual_stages ", o.pp.virtual_stages, ": the ",
                             parallel::pipeline_schedule_name(o.pp.schedule),
                             " schedule has one stage per rank and no virtual stages"));
  if (o.pp.virtual_stages < 1)
    throw UsageError(str_cat("--pp_virtual_stages must be at least 1, got ", o.pp.virtual_stages));
  if (flags.has("pp_layers_per_stage")) {
    if (pp == 1) throw UsageError("--pp_layers_per_stage needs pp_size > 1");
    o.pp.layers_per_stage =
        parallel::parse_layers_per_stage(flags.get("pp_layers_per_stage", ""), pp * o.pp.virtual_stages);
  }
  return o;
}

dist::RankDevice rank_device_from(const Flags& flags) {
  return dist::choose_device(flags.get("device", ""), flags.get("backend", ""), dist::rank_env_from_environment());
}

dist::Runtime start_runtime_from(const Flags& flags) {
  const char* env_timeout = std::getenv("MESHTRAIN_TIMEOUT_S");
  const double seconds = flags.get_double("timeout", env_timeout ? std::atof(env_timeout) : 300.0);
  if (!(seconds > 0 && seconds < 1e9))
    throw UsageError(str_cat("--timeout (or MESHTRAIN_TIMEOUT_S) must be a positive number of seconds, got ", seconds));
  const auto env = dist::rank_env_from_environment();
  const auto device = rank_device_from(flags);
  dist::bind_device(device);
  if (device.local_ranks_per_gpu > 1 && env.local_rank == 0)
    std::cerr << "note: " << env.local_world_size << " local ranks share " << dist::cuda_device_count()
              << " GPU(s), up to " << device.local_ranks_per_gpu << " per GPU\n";
  auto runtime = dist::start_runtime(env, mesh_sizes_from(flags),
                                     std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)), device.backend);
  start_flight_recorder(runtime, flags);
  return runtime;
}

void report_tp_plan(const parallel::ParallelModel& model) {
  for (auto& rule : model.tp_report().unused_rules) std::cerr << "warning: tp_plan rule '" << rule << "' matches no layer\n";
  for (auto& layer : model.tp_report().unsharded_layers)
    std::cerr << "warning: layer " << layer << " is not sharded by the tp_plan\n";
}

}  // namespace meshtrain::tools

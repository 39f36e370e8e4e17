// Pipeline schedules as data: the ordered forward / backward actions each pp rank runs on the
// step's micro-batches, under torch.distributed.pipelining's schedule names. One executor runs any
// of them (parallel/pipeline_runner.h); a schedule's correctness is its list.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace meshtrain::parallel {

// GPipe and 1F1B run one stage per rank; the interleaved schedules run virtual_stages stages per
// rank (the loop placement: rank r holds stages r, r + P, r + 2P, ...). InterleavedZeroBubble
// splits each backward into the input's gradient (sent on at once) and the weights' (later).
enum class PipelineSchedule { GPipe, OneFOneB, Interleaved1F1B, InterleavedZeroBubble };
// The names above ("1F1B" for OneFOneB); ZBVZeroBubble and LoopedBFS are refused as not
// implemented yet, anything else is a UsageError listing the names.
PipelineSchedule parse_pipeline_schedule(const std::string& name);
const char* pipeline_schedule_name(PipelineSchedule schedule);
bool is_interleaved(PipelineSchedule schedule);    // several stages per rank
bool splits_backward(PipelineSchedule schedule);  // BackwardInput / BackwardWeight actions

struct PipelineAction {
  // Backward: input and weight gradients at once. BackwardInput: the input's gradient only,
  // keeping the graph; BackwardWeight: the weights' gradients of a BackwardInput done earlier.
  enum class Kind { Forward, Backward, BackwardInput, BackwardWeight };
  Kind kind;
  int64_t micro_batch;
  int64_t stage = 0;  // the global stage, 0 .. ranks · virtual_stages - 1
  bool operator==(const PipelineAction&) const = default;
};

// The global stages rank `rank` of `ranks` holds, in order: rank, rank + ranks, ...
std::vector<int64_t> rank_stages(int64_t rank, int64_t ranks, int64_t virtual_stages);

// The actions of `rank` (0-based) of `ranks` on `micro_batches` micro-batches. GPipe: every
// forward, then every backward. 1F1B: ranks - 1 - rank forwards to fill the pipe, then one
// forward and one backward in turn, then the backwards left, so a rank holds at most
// ranks - rank micro-batches' activations; backwards in micro-batch order in both.
// Interleaved1F1B (Megatron's, as torch orders it): micro-batches in rounds of
// micro_batches / max(1, micro_batches / ranks); forwards go round by round through the local
// stages, (virtual_stages - 1) rounds plus 2 per hop to the last rank of warm-up, then one forward
// and one backward (local stages in reverse) in turn, then the backwards left.
// InterleavedZeroBubble (torch's ZB1P): the same with one hop per rank of warm-up, each backward
// an input-gradient action, and from the rank-th steady step on the weight gradient of the oldest
// backward after it; the weight gradients left come last.
std::vector<PipelineAction> pipeline_actions(PipelineSchedule schedule, int64_t rank, int64_t ranks,
                                             int64_t micro_batches, int64_t virtual_stages = 1);
// Forward only (evaluation): each micro-batch through the rank's stages in order.
std::vector<PipelineAction> forward_actions(int64_t rank, int64_t ranks, int64_t micro_batches,
                                            int64_t virtual_stages = 1);
// torch's notation, "0F0 0F1 0B0 ..." (stage, F / B / I / W, micro-batch), for messages and tests.
std::string to_string(const std::vector<PipelineAction>& actions);

// A training step needs at least as many micro-batches (gradient_accumulation_steps) as ranks
// under GPipe and 1F1B; the interleaved schedules take torch's rule: a whole number of rounds of
// max(1, micro_batches / ranks). Else a UsageError with the numbers.
void check_pipeline_micro_batches(PipelineSchedule schedule, int64_t ranks, int64_t micro_batches);

}  // namespace meshtrain::parallel

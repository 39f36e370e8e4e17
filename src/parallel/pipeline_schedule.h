// Pipeline schedules as data: the ordered forward / backward actions each stage runs on the
// step's micro-batches, under torchtitan's schedule names. One executor runs any of them
// (parallel/pipeline_runner.h); a schedule's correctness is its list.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace meshtrain::parallel {

enum class PipelineSchedule { GPipe, OneFOneB };
// "GPipe" | "1F1B"; the interleaved and zero-bubble names are refused as not implemented yet,
// anything else is a UsageError listing the names.
PipelineSchedule parse_pipeline_schedule(const std::string& name);
const char* pipeline_schedule_name(PipelineSchedule schedule);

struct PipelineAction {
  enum class Kind { Forward, Backward };
  Kind kind;
  int64_t micro_batch;
  bool operator==(const PipelineAction&) const = default;
};

// The actions of `stage` (0-based) of `stages` on `micro_batches` micro-batches. GPipe: every
// forward, then every backward. 1F1B: stages - 1 - stage forwards to fill the pipe, then one
// forward and one backward in turn, then the backwards left, so a stage holds at most
// stages - stage micro-batches' activations. Backwards run in micro-batch order in both.
std::vector<PipelineAction> pipeline_actions(PipelineSchedule schedule, int64_t stage, int64_t stages,
                                             int64_t micro_batches);
// Forward only (evaluation): every micro-batch in order.
std::vector<PipelineAction> forward_actions(int64_t micro_batches);
// "F0 F1 B0 ..." for messages and tests.
std::string to_string(const std::vector<PipelineAction>& actions);

// A training step needs at least as many micro-batches (gradient_accumulation_steps) as stages,
// else a UsageError with the numbers.
void check_pipeline_micro_batches(int64_t stages, int64_t micro_batches);

}  // namespace meshtrain::parallel

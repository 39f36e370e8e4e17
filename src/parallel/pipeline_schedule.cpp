#include "parallel/pipeline_schedule.h"

#include <algorithm>

#include "util/check.h"

namespace meshtrain::parallel {

PipelineSchedule parse_pipeline_schedule(const std::string& name) {
  if (name == "GPipe") return PipelineSchedule::GPipe;
  if (name == "1F1B") return PipelineSchedule::OneFOneB;
  for (auto later : {"Interleaved1F1B", "InterleavedZeroBubble", "ZBVZeroBubble", "LoopedBFS"})
    if (name == later)
      throw UsageError(str_cat("--pipeline_parallel_schedule ", name, " is not implemented yet; use GPipe or 1F1B"));
  throw UsageError(str_cat("unknown --pipeline_parallel_schedule '", name, "': the schedules are GPipe, 1F1B"));
}

const char* pipeline_schedule_name(PipelineSchedule schedule) {
  return schedule == PipelineSchedule::GPipe ? "GPipe" : "1F1B";
}

std::vector<PipelineAction> pipeline_actions(PipelineSchedule schedule, int64_t stage, int64_t stages,
                                             int64_t micro_batches) {
  MT_CHECK(0 <= stage && stage < stages, "stage ", stage, " of ", stages);
  using Kind = PipelineAction::Kind;
  std::vector<PipelineAction> out;
  if (schedule == PipelineSchedule::GPipe) {
    for (int64_t m = 0; m < micro_batches; ++m) out.push_back({Kind::Forward, m});
    for (int64_t m = 0; m < micro_batches; ++m) out.push_back({Kind::Backward, m});
    return out;
  }
  // Warm-up: the forwards that fill the pipe before this stage's first backward can arrive.
  const int64_t warmup = std::min(stages - 1 - stage, micro_batches);
  int64_t forward = 0, backward = 0;
  for (; forward < warmup; ++forward) out.push_back({Kind::Forward, forward});
  for (; forward < micro_batches; ++forward, ++backward) {  // steady state: one forward, one backward
    out.push_back({Kind::Forward, forward});
    out.push_back({Kind::Backward, backward});
  }
  for (; backward < micro_batches; ++backward) out.push_back({Kind::Backward, backward});  // drain
  return out;
}

std::vector<PipelineAction> forward_actions(int64_t micro_batches) {
  std::vector<PipelineAction> out;
  for (int64_t m = 0; m < micro_batches; ++m) out.push_back({PipelineAction::Kind::Forward, m});
  return out;
}

std::string to_string(const std::vector<PipelineAction>& actions) {
  std::string s;
  for (auto& a : actions)
    s += str_cat(s.empty() ? "" : " ", a.kind == PipelineAction::Kind::Forward ? "F" : "B", a.micro_batch);
  return s;
}

void check_pipeline_micro_batches(int64_t stages, int64_t micro_batches) {
  if (micro_batches < stages)
    throw UsageError(str_cat("pipeline parallelism with pp_size ", stages, " needs at least ", stages,
                             " micro-batches per step, but --gradient_accumulation_steps is ", micro_batches));
}

}  // namespace meshtrain::parallel

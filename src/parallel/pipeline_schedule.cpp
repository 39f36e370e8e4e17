#include "parallel/pipeline_schedule.h"

#include <algorithm>
#include <iterator>
#include <map>

#include "util/check.h"

namespace meshtrain::parallel {

namespace {

using Kind = PipelineAction::Kind;

constexpr PipelineSchedule kSchedules[] = {PipelineSchedule::GPipe, PipelineSchedule::OneFOneB,
                                           PipelineSchedule::Interleaved1F1B, PipelineSchedule::InterleavedZeroBubble};

std::string schedule_names(const char* last_separator) {
  std::string s;
  for (size_t i = 0; i < std::size(kSchedules); ++i)
    s += str_cat(i == 0 ? "" : i + 1 == std::size(kSchedules) ? last_separator : ", ",
                 pipeline_schedule_name(kSchedules[i]));
  return s;
}

std::vector<PipelineAction> one_stage_actions(PipelineSchedule schedule, int64_t rank, int64_t ranks,
                                              int64_t micro_batches) {
  std::vector<PipelineAction> out;
  auto add = [&](Kind kind, int64_t m) { out.push_back({kind, m, rank}); };
  if (schedule == PipelineSchedule::GPipe) {
    for (int64_t m = 0; m < micro_batches; ++m) add(Kind::Forward, m);
    for (int64_t m = 0; m < micro_batches; ++m) add(Kind::Backward, m);
    return out;
  }
  // Warm-up: the forwards that fill the pipe before this rank's first backward can arrive.
  const int64_t warmup = std::min(ranks - 1 - rank, micro_batches);
  int64_t forward = 0, backward = 0;
  for (; forward < warmup; ++forward) add(Kind::Forward, forward);
  for (; forward < micro_batches; ++forward, ++backward) {  // steady state: one forward, one backward
    add(Kind::Forward, forward);
    add(Kind::Backward, backward);
  }
  for (; backward < micro_batches; ++backward) add(Kind::Backward, backward);  // drain
  return out;
}

// Interleaved1F1B and InterleavedZeroBubble: steps numbered over the rank's V·M forwards, each
// stage taking its micro-batches in order.
std::vector<PipelineAction> interleaved_actions(bool zero_bubble, int64_t rank, int64_t ranks, int64_t micro_batches,
                                                int64_t virtual_stages) {
  const int64_t rounds = std::max<int64_t>(1, micro_batches / ranks);
  const int64_t per_round = micro_batches / rounds;
  const int64_t steps = virtual_stages * micro_batches;
  // The last rank's warm-up covers every stage but its last for one round; each hop up the pipe
  // adds the forwards (2, or 1 when weight gradients fill the gaps) its backward needs to come back.
  const int64_t warmup =
      std::min((virtual_stages - 1) * per_round + (zero_bubble ? 1 : 2) * (ranks - 1 - rank), steps);
  auto forward_stage = [&](int64_t step) { return (step / per_round) % virtual_stages * ranks + rank; };
  auto backward_stage = [&](int64_t step) {
    return (virtual_stages - 1 - (step - warmup) / per_round % virtual_stages) * ranks + rank;
  };
  std::map<int64_t, int64_t> forwards, backwards, weights;  // next micro-batch per stage
  std::vector<int64_t> backward_steps;                      // whose weight gradients are still to come
  size_t weighed = 0;
  std::vector<PipelineAction> out;
  auto add = [&](Kind kind, int64_t stage, std::map<int64_t, int64_t>& next) {
    out.push_back({kind, next[stage]++, stage});
  };
  auto weight = [&] { add(Kind::BackwardWeight, backward_stage(backward_steps[weighed++]), weights); };
  for (int64_t step = 0; step < steps + warmup; ++step) {
    if (step < steps) add(Kind::Forward, forward_stage(step), forwards);
    if (step < warmup) continue;
    add(zero_bubble ? Kind::BackwardInput : Kind::Backward, backward_stage(step), backwards);
    backward_steps.push_back(step);
    // Rank r keeps r weight gradients back: they fill the bubbles of the cool-down.
    if (zero_bubble && step - warmup >= rank) weight();
  }
  while (zero_bubble && weighed < backward_steps.size()) weight();
  return out;
}

}  // namespace

PipelineSchedule parse_pipeline_schedule(const std::string& name) {
  for (auto s : kSchedules)
    if (name == pipeline_schedule_name(s)) return s;
  for (auto later : {"ZBVZeroBubble", "LoopedBFS"})
    if (name == later)
      throw UsageError(str_cat("--pipeline_parallel_schedule ", name, " is not implemented yet; use ",
                               schedule_names(" or ")));
  throw UsageError(str_cat("unknown --pipeline_parallel_schedule '", name, "': the schedules are ",
                           schedule_names(", ")));
}

const char* pipeline_schedule_name(PipelineSchedule schedule) {
  switch (schedule) {
    case PipelineSchedule::GPipe: return "GPipe";
    case PipelineSchedule::OneFOneB: return "1F1B";
    case PipelineSchedule::Interleaved1F1B: return "Interleaved1F1B";
    case PipelineSchedule::InterleavedZeroBubble: return "InterleavedZeroBubble";
  }
  return "?";
}

bool is_interleaved(PipelineSchedule schedule) {
  return schedule == PipelineSchedule::Interleaved1F1B || schedule == PipelineSchedule::InterleavedZeroBubble;
}

bool splits_backward(PipelineSchedule schedule) { return schedule == PipelineSchedule::InterleavedZeroBubble; }

std::vector<int64_t> rank_stages(int64_t rank, int64_t ranks, int64_t virtual_stages) {
  std::vector<int64_t> out;
  for (int64_t v = 0; v < virtual_stages; ++v) out.push_back(v * ranks + rank);
  return out;
}

std::vector<PipelineAction> pipeline_actions(PipelineSchedule schedule, int64_t rank, int64_t ranks,
                                             int64_t micro_batches, int64_t virtual_stages) {
  MT_CHECK(0 <= rank && rank < ranks, "rank ", rank, " of ", ranks);
  MT_CHECK(virtual_stages >= 1 && (virtual_stages == 1 || is_interleaved(schedule)), "the ",
           pipeline_schedule_name(schedule), " schedule with ", virtual_stages, " stages per rank");
  if (!is_interleaved(schedule)) return one_stage_actions(schedule, rank, ranks, micro_batches);
  return interleaved_actions(splits_backward(schedule), rank, ranks, micro_batches, virtual_stages);
}

std::vector<PipelineAction> forward_actions(int64_t rank, int64_t ranks, int64_t micro_batches,
                                            int64_t virtual_stages) {
  std::vector<PipelineAction> out;
  for (int64_t m = 0; m < micro_batches; ++m)
    for (auto stage : rank_stages(rank, ranks, virtual_stages)) out.push_back({Kind::Forward, m, stage});
  return out;
}

std::string to_string(const std::vector<PipelineAction>& actions) {
  static constexpr const char* kLetter[] = {"F", "B", "I", "W"};
  std::string s;
  for (auto& a : actions)
    s += str_cat(s.empty() ? "" : " ", a.stage, kLetter[static_cast<int>(a.kind)], a.micro_batch);
  return s;
}

void check_pipeline_micro_batches(PipelineSchedule schedule, int64_t ranks, int64_t micro_batches) {
  if (!is_interleaved(schedule)) {
    if (micro_batches < ranks)
      throw UsageError(str_cat("pipeline parallelism with pp_size ", ranks, " needs at least ", ranks,
                               " micro-batches per step, but --gradient_accumulation_steps is ", micro_batches));
    return;
  }
  const int64_t rounds = std::max<int64_t>(1, micro_batches / ranks);
  if (micro_batches % rounds != 0)
    throw UsageError(str_cat("--pipeline_parallel_schedule ", pipeline_schedule_name(schedule), " with pp_size ",
                             ranks, " splits --gradient_accumulation_steps ", micro_batches, " into max(1, ",
                             micro_batches, " / ", ranks, ") = ", rounds, " rounds of equal size; use a multiple of ",
                             rounds));
}

}  // namespace meshtrain::parallel

// Pipeline schedules as action lists (GPipe and 1F1B for 2 and 4 stages, 4 and 8 micro-batches),
// that every schedule completes when stages wait only for their neighbours' messages, the
// activation bound of 1F1B, the stage split, and the errors on bad input.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "parallel/pipeline_schedule.h"
#include "parallel/pipeline_stage.h"
#include "util/check.h"

using namespace meshtrain;
using namespace meshtrain::parallel;
using ::testing::HasSubstr;

namespace {

std::string actions(PipelineSchedule s, int64_t stage, int64_t stages, int64_t m) {
  return to_string(pipeline_actions(s, stage, stages, m));
}

// Runs every stage's list, an action starting once what it receives has been sent (a forward
// needs the previous stage's forward of its micro-batch, a backward the next stage's backward);
// sends never block. Returns the number of actions left when no stage can move.
int64_t stuck_actions(PipelineSchedule s, int64_t stages, int64_t m) {
  std::vector<std::vector<PipelineAction>> lists;
  for (int64_t p = 0; p < stages; ++p) lists.push_back(pipeline_actions(s, p, stages, m));
  std::vector<size_t> next(stages, 0);
  std::vector<std::vector<bool>> forward_done(stages, std::vector<bool>(m)), backward_done = forward_done;
  for (bool moved = true; moved;) {
    moved = false;
    for (int64_t p = 0; p < stages; ++p) {
      if (next[p] == lists[p].size()) continue;
      const auto a = lists[p][next[p]];
      const bool ready = a.kind == PipelineAction::Kind::Forward
                             ? p == 0 || forward_done[p - 1][a.micro_batch]
                             : forward_done[p][a.micro_batch] && (p == stages - 1 || backward_done[p + 1][a.micro_batch]);
      if (!ready) continue;
      (a.kind == PipelineAction::Kind::Forward ? forward_done : backward_done)[p][a.micro_batch] = true;
      ++next[p];
      moved = true;
    }
  }
  int64_t left = 0;
  for (int64_t p = 0; p < stages; ++p) left += static_cast<int64_t>(lists[p].size() - next[p]);
  return left;
}

}  // namespace

TEST(PipelineSchedule, GPipeRunsEveryForwardThenEveryBackward) {
  EXPECT_EQ(actions(PipelineSchedule::GPipe, 0, 2, 4), "F0 F1 F2 F3 B0 B1 B2 B3");
  EXPECT_EQ(actions(PipelineSchedule::GPipe, 3, 4, 4), "F0 F1 F2 F3 B0 B1 B2 B3");
  EXPECT_EQ(actions(PipelineSchedule::GPipe, 1, 4, 8), "F0 F1 F2 F3 F4 F5 F6 F7 B0 B1 B2 B3 B4 B5 B6 B7");
}

TEST(PipelineSchedule, OneFOneBFillsThePipeThenAlternates) {
  EXPECT_EQ(actions(PipelineSchedule::OneFOneB, 0, 2, 4), "F0 F1 B0 F2 B1 F3 B2 B3");
  EXPECT_EQ(actions(PipelineSchedule::OneFOneB, 1, 2, 4), "F0 B0 F1 B1 F2 B2 F3 B3");
  EXPECT_EQ(actions(PipelineSchedule::OneFOneB, 0, 4, 4), "F0 F1 F2 F3 B0 B1 B2 B3");
  EXPECT_EQ(actions(PipelineSchedule::OneFOneB, 1, 4, 4), "F0 F1 F2 B0 F3 B1 B2 B3");
  EXPECT_EQ(actions(PipelineSchedule::OneFOneB, 2, 4, 4), "F0 F1 B0 F2 B1 F3 B2 B3");
  EXPECT_EQ(actions(PipelineSchedule::OneFOneB, 3, 4, 4), "F0 B0 F1 B1 F2 B2 F3 B3");
  EXPECT_EQ(actions(PipelineSchedule::OneFOneB, 0, 4, 8), "F0 F1 F2 F3 B0 F4 B1 F5 B2 F6 B3 F7 B4 B5 B6 B7");
  EXPECT_EQ(actions(PipelineSchedule::OneFOneB, 2, 4, 8), "F0 F1 B0 F2 B1 F3 B2 F4 B3 F5 B4 F6 B5 F7 B6 B7");
}

TEST(PipelineSchedule, EveryScheduleCompletesAndOneFOneBBoundsTheMicroBatchesInFlight) {
  for (auto s : {PipelineSchedule::GPipe, PipelineSchedule::OneFOneB})
    for (int64_t stages : {2, 4})
      for (int64_t m : {4, 8}) {
        EXPECT_EQ(stuck_actions(s, stages, m), 0) << pipeline_schedule_name(s) << " P=" << stages << " M=" << m;
        for (int64_t p = 0; p < stages; ++p) {
          int64_t in_flight = 0, most = 0, forwards = 0, backwards = 0;
          for (auto& a : pipeline_actions(s, p, stages, m)) {
            const bool fwd = a.kind == PipelineAction::Kind::Forward;
            EXPECT_EQ(a.micro_batch, fwd ? forwards++ : backwards++);  // each kind in micro-batch order
            in_flight += fwd ? 1 : -1;
            most = std::max(most, in_flight);
          }
          EXPECT_EQ(forwards, m);
          EXPECT_EQ(backwards, m);
          EXPECT_EQ(most, s == PipelineSchedule::GPipe ? m : stages - p);
        }
      }
}

TEST(PipelineSchedule, NamesAndTheirErrors) {
  EXPECT_EQ(parse_pipeline_schedule("GPipe"), PipelineSchedule::GPipe);
  EXPECT_EQ(parse_pipeline_schedule("1F1B"), PipelineSchedule::OneFOneB);
  try {
    parse_pipeline_schedule("1f1b");
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_STREQ(e.what(), "unknown --pipeline_parallel_schedule '1f1b': the schedules are GPipe, 1F1B");
  }
  try {
    parse_pipeline_schedule("ZBVZeroBubble");
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_STREQ(e.what(), "--pipeline_parallel_schedule ZBVZeroBubble is not implemented yet; use GPipe or 1F1B");
  }
  try {
    check_pipeline_micro_batches(4, 3);
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_STREQ(e.what(),
                 "pipeline parallelism with pp_size 4 needs at least 4 micro-batches per step, but "
                 "--gradient_accumulation_steps is 3");
  }
  EXPECT_NO_THROW(check_pipeline_micro_batches(2, 2));
}

TEST(PipelineStage, EvenAndGivenSplits) {
  auto text = [](const std::vector<StageLayers>& split) {
    std::string s;
    for (auto& st : split) s += "[" + std::to_string(st.begin) + "," + std::to_string(st.end) + ")";
    return s;
  };
  EXPECT_EQ(text(split_stages(4, 2, {})), "[0,2)[2,4)");
  EXPECT_EQ(text(split_stages(4, 4, {})), "[0,1)[1,2)[2,3)[3,4)");
  EXPECT_EQ(text(split_stages(5, 2, {3, 2})), "[0,3)[3,5)");
  EXPECT_EQ(parse_layers_per_stage("3,1", 2), (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(parse_layers_per_stage("2", 3), (std::vector<int64_t>{2, 2, 2}));
}

TEST(PipelineStage, BadSplitsAreOneClearLineEach) {
  auto error_of = [](auto fn) {
    try {
      fn();
    } catch (const UsageError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(error_of([] { split_stages(2, 4, {}); }),
            "pp_size 4 asks for more pipeline stages than the model's 2 decoder layers");
  EXPECT_EQ(error_of([] { split_stages(5, 2, {}); }),
            "pp_size 2 does not divide the model's 5 decoder layers evenly; give --pp_layers_per_stage");
  EXPECT_EQ(error_of([] { split_stages(5, 2, {4, 2}); }),
            "--pp_layers_per_stage gives 2 stage(s) of 6 layers in all; pp_size 2 needs 2 counts of at least 1 "
            "summing to the model's 5 decoder layers");
  EXPECT_THAT(error_of([] { split_stages(4, 2, {4, 0}); }), HasSubstr("counts of at least 1"));
  EXPECT_THAT(error_of([] { split_stages(4, 2, {1, 1, 2}); }), HasSubstr("gives 3 stage(s)"));
  EXPECT_EQ(error_of([] { parse_layers_per_stage("2,x", 2); }),
            "--pp_layers_per_stage must be a number or a comma-separated list of numbers, got '2,x'");
}

// Pipeline schedules as action lists (GPipe and 1F1B for 2 and 4 stages, 4 and 8 micro-batches),
// that every schedule completes when stages wait only for their neighbours' messages, the
// activation bound of 1F1B, the stage split, and the errors on bad input.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <tuple>

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

// Runs every rank's list, an action starting once what it needs has happened: a forward the
// previous stage's forward of its micro-batch, a (input) backward its own forward and the next
// stage's (input) backward, a weight backward its input backward; sends never block. Returns the
// number of actions left when no rank can move.
int64_t stuck_actions(PipelineSchedule s, int64_t ranks, int64_t m, int64_t virtual_stages = 1) {
  using Kind = PipelineAction::Kind;
  const int64_t stages = ranks * virtual_stages;
  std::vector<std::vector<PipelineAction>> lists;
  for (int64_t r = 0; r < ranks; ++r) lists.push_back(pipeline_actions(s, r, ranks, m, virtual_stages));
  std::vector<size_t> next(ranks, 0);
  std::set<std::tuple<int64_t, bool, int64_t>> done;  // (stage, backward, micro-batch)
  auto has = [&](int64_t stage, bool backward, int64_t mb) { return done.count({stage, backward, mb}) > 0; };
  for (bool moved = true; moved;) {
    moved = false;
    for (int64_t r = 0; r < ranks; ++r) {
      if (next[r] == lists[r].size()) continue;
      const auto a = lists[r][next[r]];
      bool ready = true;
      if (a.kind == Kind::Forward) ready = a.stage == 0 || has(a.stage - 1, false, a.micro_batch);
      else if (a.kind == Kind::BackwardWeight) ready = has(a.stage, true, a.micro_batch);
      else ready = has(a.stage, false, a.micro_batch) && (a.stage == stages - 1 || has(a.stage + 1, true, a.micro_batch));
      if (!ready) continue;
      if (a.kind != Kind::BackwardWeight) done.insert({a.stage, a.kind != Kind::Forward, a.micro_batch});
      ++next[r];
      moved = true;
    }
  }
  int64_t left = 0;
  for (int64_t r = 0; r < ranks; ++r) left += static_cast<int64_t>(lists[r].size() - next[r]);
  return left;
}

std::string interleaved(PipelineSchedule s, int64_t rank, int64_t ranks, int64_t m, int64_t virtual_stages) {
  return to_string(pipeline_actions(s, rank, ranks, m, virtual_stages));
}

}  // namespace

TEST(PipelineSchedule, GPipeRunsEveryForwardThenEveryBackward) {
  EXPECT_EQ(actions(PipelineSchedule::GPipe, 0, 2, 4), "0F0 0F1 0F2 0F3 0B0 0B1 0B2 0B3");
  EXPECT_EQ(actions(PipelineSchedule::GPipe, 3, 4, 4), "3F0 3F1 3F2 3F3 3B0 3B1 3B2 3B3");
  EXPECT_EQ(actions(PipelineSchedule::GPipe, 1, 4, 8), "1F0 1F1 1F2 1F3 1F4 1F5 1F6 1F7 1B0 1B1 1B2 1B3 1B4 1B5 1B6 1B7");
}

TEST(PipelineSchedule, OneFOneBFillsThePipeThenAlternates) {
  EXPECT_EQ(actions(PipelineSchedule::OneFOneB, 0, 2, 4), "0F0 0F1 0B0 0F2 0B1 0F3 0B2 0B3");
  EXPECT_EQ(actions(PipelineSchedule::OneFOneB, 1, 2, 4), "1F0 1B0 1F1 1B1 1F2 1B2 1F3 1B3");
  EXPECT_EQ(actions(PipelineSchedule::OneFOneB, 0, 4, 4), "0F0 0F1 0F2 0F3 0B0 0B1 0B2 0B3");
  EXPECT_EQ(actions(PipelineSchedule::OneFOneB, 1, 4, 4), "1F0 1F1 1F2 1B0 1F3 1B1 1B2 1B3");
  EXPECT_EQ(actions(PipelineSchedule::OneFOneB, 2, 4, 4), "2F0 2F1 2B0 2F2 2B1 2F3 2B2 2B3");
  EXPECT_EQ(actions(PipelineSchedule::OneFOneB, 3, 4, 4), "3F0 3B0 3F1 3B1 3F2 3B2 3F3 3B3");
  EXPECT_EQ(actions(PipelineSchedule::OneFOneB, 0, 4, 8), "0F0 0F1 0F2 0F3 0B0 0F4 0B1 0F5 0B2 0F6 0B3 0F7 0B4 0B5 0B6 0B7");
  EXPECT_EQ(actions(PipelineSchedule::OneFOneB, 2, 4, 8), "2F0 2F1 2B0 2F2 2B1 2F3 2B2 2F4 2B3 2F5 2B4 2F6 2B5 2F7 2B6 2B7");
}

// Rank r holds stages r and r + 2; forwards go two micro-batches (a round) per stage, backwards
// from the last local stage, as Megatron and torch order them.
TEST(PipelineSchedule, Interleaved1F1BGoesRoundByRoundThroughTheLocalStages) {
  const auto s = PipelineSchedule::Interleaved1F1B;
  EXPECT_EQ(interleaved(s, 0, 2, 4, 2), "0F0 0F1 2F0 2F1 0F2 2B0 0F3 2B1 2F2 0B0 2F3 0B1 2B2 2B3 0B2 0B3");
  EXPECT_EQ(interleaved(s, 1, 2, 4, 2), "1F0 1F1 3F0 3B0 3F1 3B1 1F2 1B0 1F3 1B1 3F2 3B2 3F3 3B3 1B2 1B3");
  EXPECT_EQ(interleaved(s, 1, 2, 2, 2), "1F0 1F1 3F0 3B0 3F1 3B1 1B0 1B1");
}

// ZB1P: one fewer warm-up forward per hop; rank r keeps r weight gradients back for the cool-down.
TEST(PipelineSchedule, InterleavedZeroBubbleSplitsEachBackwardAndDelaysTheWeights) {
  const auto s = PipelineSchedule::InterleavedZeroBubble;
  EXPECT_EQ(interleaved(s, 0, 2, 4, 2),
            "0F0 0F1 2F0 2F1 2I0 2W0 0F2 2I1 2W1 0F3 0I0 0W0 2F2 0I1 0W1 2F3 2I2 2W2 2I3 2W3 0I2 0W2 0I3 0W3");
  EXPECT_EQ(interleaved(s, 1, 2, 4, 2),
            "1F0 1F1 3F0 3I0 3F1 3I1 3W0 1F2 1I0 3W1 1F3 1I1 1W0 3F2 3I2 1W1 3F3 3I3 3W2 1I2 3W3 1I3 1W2 1W3");
}

// Every (stage, micro-batch) of a rank's stages runs its forward once, then its backward once (or
// its input backward and then its weight backward once); the lists complete across the ranks.
TEST(PipelineSchedule, InterleavedSchedulesRunEachStageOnceAndComplete) {
  for (auto s : {PipelineSchedule::Interleaved1F1B, PipelineSchedule::InterleavedZeroBubble})
    for (int64_t ranks : {2, 3, 4})
      for (int64_t v : {1, 2, 3})
        for (int64_t m = 1; m <= 12; ++m) {
          const auto rounds = std::max<int64_t>(1, m / ranks);
          if (m % rounds != 0) continue;  // refused by check_pipeline_micro_batches
          const auto where = ::testing::Message() << pipeline_schedule_name(s) << " P=" << ranks << " V=" << v
                                                  << " M=" << m;
          EXPECT_EQ(stuck_actions(s, ranks, m, v), 0) << where;
          for (int64_t r = 0; r < ranks; ++r) {
            std::map<std::pair<int64_t, int64_t>, std::string> seen;  // the kinds in order
            for (auto& a : pipeline_actions(s, r, ranks, m, v)) {
              EXPECT_EQ(a.stage % ranks, r) << where;
              seen[{a.stage, a.micro_batch}] += "FBIW"[static_cast<int>(a.kind)];
            }
            EXPECT_EQ(seen.size(), static_cast<size_t>(v * m)) << where;
            for (auto& [key, kinds] : seen)
              EXPECT_EQ(kinds, splits_backward(s) ? "FIW" : "FB") << where << " stage " << key.first << " mb " << key.second;
          }
        }
  EXPECT_EQ(to_string(forward_actions(1, 2, 2, 2)), "1F0 3F0 1F1 3F1");
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
    EXPECT_STREQ(e.what(), "unknown --pipeline_parallel_schedule '1f1b': the schedules are GPipe, 1F1B, "
                           "Interleaved1F1B, InterleavedZeroBubble");
  }
  try {
    parse_pipeline_schedule("ZBVZeroBubble");
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_STREQ(e.what(), "--pipeline_parallel_schedule ZBVZeroBubble is not implemented yet; use GPipe, 1F1B, "
                           "Interleaved1F1B or InterleavedZeroBubble");
  }
  try {
    check_pipeline_micro_batches(PipelineSchedule::OneFOneB, 4, 3);
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_STREQ(e.what(),
                 "pipeline parallelism with pp_size 4 needs at least 4 micro-batches per step, but "
                 "--gradient_accumulation_steps is 3");
  }
  EXPECT_NO_THROW(check_pipeline_micro_batches(PipelineSchedule::GPipe, 2, 2));
  // The interleaved schedules take torch's rule: whole rounds of max(1, M / P) micro-batches.
  try {
    check_pipeline_micro_batches(PipelineSchedule::Interleaved1F1B, 2, 5);
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_STREQ(e.what(),
                 "--pipeline_parallel_schedule Interleaved1F1B with pp_size 2 splits --gradient_accumulation_steps 5 "
                 "into max(1, 5 / 2) = 2 rounds of equal size; use a multiple of 2");
  }
  EXPECT_THROW(check_pipeline_micro_batches(PipelineSchedule::InterleavedZeroBubble, 4, 9), UsageError);
  for (int64_t m : {1, 3, 4, 6, 8, 10})
    EXPECT_NO_THROW(check_pipeline_micro_batches(PipelineSchedule::Interleaved1F1B, 2, m)) << m;
  EXPECT_NO_THROW(check_pipeline_micro_batches(PipelineSchedule::Interleaved1F1B, 4, 3));
  EXPECT_EQ(parse_pipeline_schedule("Interleaved1F1B"), PipelineSchedule::Interleaved1F1B);
  EXPECT_EQ(parse_pipeline_schedule("InterleavedZeroBubble"), PipelineSchedule::InterleavedZeroBubble);
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
  EXPECT_EQ(text(split_stages(8, 2, {}, 2)), "[0,2)[2,4)[4,6)[6,8)");  // rank 0: [0,2) and [4,6)
  EXPECT_EQ(rank_stages(1, 2, 3), (std::vector<int64_t>{1, 3, 5}));
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
  EXPECT_EQ(error_of([] { split_stages(6, 2, {}, 2); }),
            "pp_size 2 x pp_virtual_stages 2 (4 stages) does not divide the model's 6 decoder layers evenly; give "
            "--pp_layers_per_stage");
  EXPECT_THAT(error_of([] { split_stages(4, 2, {1, 1, 2}); }), HasSubstr("gives 3 stage(s)"));
  EXPECT_EQ(error_of([] { parse_layers_per_stage("2,x", 2); }),
            "--pp_layers_per_stage must be a number or a comma-separated list of numbers, got '2,x'");
}

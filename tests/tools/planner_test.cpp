// `meshtrain plan` checked against the runs it predicts: for a handful of layouts (DDP, FSDP,
// tp, tp with sequence parallelism, cp, expert parallelism both ways, FSDP × tp, activation
// checkpointing, and pipeline stages under 1F1B and GPipe, also with FSDP and tp) rank 0's
// predicted peak memory is within 15% of the peak its memory meter measured in training, and the
// bytes each mesh dim sends per step within 2% of the counters (5% where they depend on the
// routing).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>

#include "support/run_command.h"

using namespace meshtrain::testing;
namespace fs = std::filesystem;

namespace {

struct Layout {
  std::string name;
  std::string config;
  int world;
  std::string flags;
};

// Rows per micro-batch and rank, and the window: large enough that activations dominate.
const std::string kShape = " --seq_len 128 --per_device_train_batch_size 4";

void expect_prediction_matches_the_run(const Layout& layout) {
  SCOPED_TRACE(layout.name);
  const std::string config = kSource + "/configs/" + layout.config;
  auto plan = run_command(kBin + " plan --json --world " + std::to_string(layout.world) + " --config_name " + config +
                          kShape + layout.flags);
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  const auto predicted = nlohmann::json::parse(plan.out);
  const auto out = fs::temp_directory_path() / ("mt_planner_" + std::to_string(::getpid()) + "_" + layout.name);
  fs::remove_all(out);
  auto run = run_command(kBin + " launch -n " + std::to_string(layout.world) + " -- train --config_name " + config +
                         " --data " + kSource + "/data/corpus.txt" + kShape +
                         " --max_steps 3 --logging_steps 1 --save_steps 0 --output_dir " + out.string() + layout.flags);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto rows = metrics_of(out);
  ASSERT_EQ(rows.size(), 3u);
  // The last step: the first ones also allocate the optimizer state and DDP's buckets.
  const auto& measured = rows.back();
  ASSERT_TRUE(measured.contains("peak_memory_mib")) << measured.dump();
  const double peak_mib = predicted["memory"]["peak"].get<double>() / (1 << 20);
  EXPECT_NEAR(peak_mib / measured["peak_memory_mib"].get<double>(), 1.0, 0.15)
      << "predicted " << peak_mib << " MiB, measured " << measured["peak_memory_mib"];
  const auto& want = predicted["bytes_sent_per_step"];
  const auto& got = measured.value("bytes_sent_per_step", nlohmann::json::object());
  EXPECT_TRUE(predicted["unmodelled"].empty()) << predicted["unmodelled"].dump();
  for (auto& [dim, bytes] : got.items()) {
    ASSERT_TRUE(want.contains(dim)) << dim << " sent " << bytes << " bytes per step, predicted none";
    // Traffic that depends on where the router sends tokens is an expectation, not a count.
    const double tolerance = predicted["estimated"].contains(dim) ? 0.05 : 0.02;
    EXPECT_NEAR(want[dim].get<double>() / bytes.get<double>(), 1.0, tolerance)
        << dim << ": predicted " << want[dim] << ", measured " << bytes;
  }
  for (auto& [dim, bytes] : want.items()) EXPECT_TRUE(got.contains(dim)) << dim << " predicted " << bytes << ", sent none";
  fs::remove_all(out);
}

}  // namespace

TEST(Planner, PredictsDenseLayoutsPeakMemoryAndBytesPerDim) {
  for (const auto& layout : std::vector<Layout>{
           {"single", "llama-tiny", 1, ""},
           {"ddp", "llama-tiny", 2, " --dp_replicate_size 2"},
           {"fsdp", "llama-tiny", 2, " --dp_shard_size 2"},
           {"tp", "llama-tiny", 2, " --tp_size 2"},
           {"tp_sp", "llama-tiny", 2, " --tp_size 2 --sequence_parallel"},
           {"cp", "llama-tiny", 2, " --cp_size 2"},
           {"fsdp_tp", "llama-tiny", 4, " --dp_shard_size 2 --tp_size 2"},
           {"checkpointed", "llama-tiny", 1, " --gradient_checkpointing"},
       })
    expect_prediction_matches_the_run(layout);
}

// Rank 0 is the first stage: the activations 1F1B keeps in flight, the hidden states it sends on.
TEST(Planner, PredictsPipelineLayouts) {
  for (const auto& layout : std::vector<Layout>{
           {"pp", "llama-tiny", 2, " --pp_size 2 --gradient_accumulation_steps 4"},
           {"pp_gpipe", "llama-tiny", 2,
            " --pp_size 2 --gradient_accumulation_steps 4 --pipeline_parallel_schedule GPipe"},
           {"pp_fsdp", "llama-tiny", 4, " --pp_size 2 --dp_shard_size 2 --gradient_accumulation_steps 2"},
           {"pp_tp_sp", "llama-tiny", 4,
            " --pp_size 2 --tp_size 2 --sequence_parallel --gradient_accumulation_steps 2"},
       })
    expect_prediction_matches_the_run(layout);
}

TEST(Planner, PredictsExpertParallelLayouts) {
  for (const auto& layout : std::vector<Layout>{
           {"moe_fsdp_ep", "mixtral-tiny", 2, " --dp_shard_size 2 --ep_size 2"},
           {"moe_tp_ep_masked", "mixtral-tiny", 2, " --tp_size 2 --ep_size 2 --ep_mode allreduce"},
       })
    expect_prediction_matches_the_run(layout);
}

TEST(Planner, RanksEveryLayoutOfTheWorldAndMarksWhatFitsTheBudget) {
  auto r = run_command(kBin + " plan --world 4 --config_name " + kSource + "/configs/llama-tiny" + kShape +
                       " --memory_budget 0.004");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("20 layouts of 4 ranks"), std::string::npos) << r.out;  // as tools::valid_layouts
  EXPECT_NE(r.out.find("  dp_shard4 "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  cp2xtp2+sp "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  sp4 "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(">="), std::string::npos) << r.out;  // Ulysses' all-to-all is not predicted
  EXPECT_NE(r.out.find("  yes"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  no"), std::string::npos) << r.out;
  auto bad = run_command(kBin + " plan --world 2 --config_name " + kSource + "/configs/llama-tiny --memory_budget -1");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--memory_budget must be positive GiB, got -1"), std::string::npos) << bad.err;
}

// Distributed training as a user runs it: `meshtrain launch` with DDP, FSDP, context and expert
// parallelism reproducing the single-rank losses, eval and generate on other layouts,
// `meshtrain plan`, invalid sizes, a rank that never arrives and a rank that dies mid-run: every
// failure ends with a non-zero exit and a message, never a hang.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "support/run_command.h"

using namespace meshtrain::testing;
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

std::string train_args(const fs::path& out, int micro) {
  return " train --config_name " + kSource + "/configs/llama-tiny --data " + kSource +
         "/data/corpus.txt --seq_len 32 --max_steps 4 --logging_steps 1 --save_steps 0 --learning_rate 3e-3"
         " --per_device_train_batch_size " + std::to_string(micro) + " --output_dir " + out.string();
}

constexpr size_t kSteps = 4;  // --max_steps of train_args, logged every step

// Both runs logged every step, with the same losses to 1e-5 relative.
void expect_same_losses(const fs::path& run, const fs::path& reference) {
  auto a = metrics_of(reference), b = metrics_of(run);
  ASSERT_EQ(a.size(), kSteps) << reference;
  ASSERT_EQ(b.size(), kSteps) << run;
  for (size_t i = 0; i < kSteps; ++i) {
    EXPECT_EQ(b[i]["step"], i + 1) << run;
    const double want = a[i]["loss"];
    EXPECT_NEAR(b[i]["loss"].get<double>(), want, 1e-5 * want) << run << " step " << i + 1;
  }
}

fs::path temp_dir(const std::string& name) {
  auto p = fs::temp_directory_path() / ("mt_dcli_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  return p;
}

// A port for a hand-made rendezvous (the launcher picks its own).
int test_port() { return 20000 + ::getpid() % 20000; }

}  // namespace

TEST(DistributedCli, LaunchedDdpAndFsdpReproduceTheSingleRankLossesAndEvalAgreesOnAnyLayout) {
  auto single = temp_dir("single"), ddp = temp_dir("ddp"), fsdp = temp_dir("fsdp");
  auto r0 = run_command(kBin + train_args(single, 4));
  ASSERT_EQ(r0.exit_code, 0) << r0.err;
  auto r1 = run_command(kBin + " launch -n 2 --" + train_args(ddp, 2) + " --dp_replicate_size 2");
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  EXPECT_NE(r1.err.find("total_train_batch_size 4"), std::string::npos) << r1.err;
  auto r2 = run_command(kBin + " launch -n 2 --" + train_args(fsdp, 2) + " --dp_shard_size -1");
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  expect_same_losses(ddp, single);
  expect_same_losses(fsdp, single);
  // The saved model evaluates to the same loss on one rank and on every 2-rank layout.
  const std::string eval = " eval --model_name_or_path " + fsdp.string() + " --data " + kSource +
                           "/data/corpus.txt --seq_len 64 --batch_size 3";
  auto e1 = run_command(kBin + eval);
  ASSERT_EQ(e1.exit_code, 0) << e1.err;
  const double loss = meshtrain::testing::printed_value(e1.out, "eval_loss");
  for (std::string layout : {" --tp_size 2", " --dp_shard_size 2", " --tp_size 2 --sequence_parallel --loss_parallel",
                             " --cp_size 2", " --sp_size 2"}) {
    auto e2 = run_command(kBin + " launch -n 2 --" + eval + layout);
    ASSERT_EQ(e2.exit_code, 0) << e2.err;
    EXPECT_NEAR(meshtrain::testing::printed_value(e2.out, "eval_loss"), loss, 1e-5 * loss) << layout;
    EXPECT_EQ(meshtrain::testing::printed_value(e2.out, "eval_tokens"),
              meshtrain::testing::printed_value(e1.out, "eval_tokens"));
  }
  // generate under tp 2 continues the prompt exactly as one rank does, printed once.
  const std::string generate = " generate --model_name_or_path " + fsdp.string() + " --prompt Hello --max_new_tokens 12";
  auto g1 = run_command(kBin + generate);
  ASSERT_EQ(g1.exit_code, 0) << g1.err;
  auto g2 = run_command(kBin + " launch -n 2 --" + generate + " --tp_size 2");
  ASSERT_EQ(g2.exit_code, 0) << g2.err;
  EXPECT_EQ(g2.out, g1.out);
  for (auto& d : {single, ddp, fsdp}) fs::remove_all(d);
}

TEST(DistributedCli, PlanPrintsCoordinatesGroupsAndTheGradientSyncPlan) {
  auto r = run_command(kBin + " plan --world 8 --dp_shard_size -1 --tp_size 2 --dp_replicate_size 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("mesh dp_replicate=2 dp_shard=2 cp=1 sp=1 tp=2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rank 5: dp_replicate=1 dp_shard=0 cp=0 sp=0 tp=1 | dp_replicate[1,5] dp_shard[5,7]"),
            std::string::npos)
      << r.out;
  // With a config: rank 0's gradient-sync plan, read off the placement records.
  auto ddp = run_command(kBin + " plan --world 2 --dp_replicate_size 2 --config_name " + kSource + "/configs/llama-tiny");
  ASSERT_EQ(ddp.exit_code, 0) << ddp.err;
  // 256 x 64 fp32 gradients, ring all-reduce over 2 ranks: 2 (n-1)/n of 65536 bytes.
  EXPECT_TRUE(std::regex_search(ddp.out, std::regex("lm_head.weight +dp_cp_sp +ddp bucket all-reduce +65536\n")))
      << ddp.out;
  auto moe = run_command(kBin + " plan --world 8 --dp_shard_size 4 --tp_size 2 --sequence_parallel --ep_size 2 "
                         "--config_name " + kSource + "/configs/mixtral-tiny");
  ASSERT_EQ(moe.exit_code, 0) << moe.err;
  for (auto line : {"model.layers.0.self_attn.q_proj.weight +dp_shard_cp +fsdp reduce-scatter",
                    "model.layers.0.mlp.experts.gate_up_proj +ep_replicate +all-reduce after backward",
                    "model.norm.weight +tp +all-reduce after backward",
                    "model.norm.weight +dp_shard_cp +fsdp reduce-scatter"})
    EXPECT_TRUE(std::regex_search(moe.out, std::regex(line))) << line << " not in\n" << moe.out;
  EXPECT_EQ(moe.out.find("experts.gate_up_proj           dp_shard_cp"), std::string::npos) << moe.out;
  auto bad = run_command(kBin + " plan --world 6 --tp_size 4");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("= 4 does not match the world size 6"), std::string::npos) << bad.err;
}

TEST(DistributedCli, SizesThatDoNotMultiplyToTheWorldAreRejected) {
  auto out = temp_dir("sizes");
  auto r = run_command(kBin + train_args(out, 2) + " --dp_shard_size 2");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("dp_replicate_size 1 x dp_shard_size 2 x cp_size 1 x sp_size 1 x tp_size 1 = 2 does not match "
                       "the world size 1"),
            std::string::npos)
      << r.err;
  fs::remove_all(out);
}

TEST(DistributedCli, ContextAndUlyssesParallelTrainAndASequenceThatDoesNotSplitIsRejected) {
  auto single = temp_dir("cp_single"), cp = temp_dir("cp2"), sp = temp_dir("sp2"), bad = temp_dir("cp_bad");
  auto r0 = run_command(kBin + train_args(single, 2));
  ASSERT_EQ(r0.exit_code, 0) << r0.err;
  auto r1 = run_command(kBin + " launch -n 2 --" + train_args(cp, 2) + " --cp_size 2 --cp_comm_strategy allgather");
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  expect_same_losses(cp, single);
  auto ulysses = run_command(kBin + " launch -n 2 --" + train_args(sp, 2) + " --sp_size 2");
  ASSERT_EQ(ulysses.exit_code, 0) << ulysses.err;
  expect_same_losses(sp, single);
  // 30 tokens do not split into 2·cp = 4 chunks; an unknown strategy is upstream's error.
  auto r2 = run_command(kBin + " launch -n 2 --" + train_args(bad, 2) + " --cp_size 2 --seq_len 30");
  EXPECT_NE(r2.exit_code, 0);
  EXPECT_NE(r2.err.find("is not divisible by 2*cp=4"), std::string::npos) << r2.err;
  auto r3 = run_command(kBin + train_args(bad, 2) + " --cp_comm_strategy ring");
  EXPECT_EQ(r3.exit_code, 2);
  EXPECT_NE(r3.err.find("Context Parallel does not support using ring for kv shards rotation"), std::string::npos)
      << r3.err;
  EXPECT_FALSE(fs::exists(bad / "model.safetensors"));
  for (auto& d : {single, cp, sp, bad}) fs::remove_all(d);
}

TEST(DistributedCli, ATpPlanFileShardsWhatItNamesAndWarnsAboutTheRest) {
  auto single = temp_dir("plan_single"), tp = temp_dir("plan_tp2"), bad = temp_dir("plan_bad");
  fs::create_directories(tp);
  // Attention only, and one rule for a module llama does not have.
  std::ofstream(tp / "plan.json") << R"({"model.layers.*.self_attn.q_proj": "colwise",
    "model.layers.*.self_attn.k_proj": "colwise", "model.layers.*.self_attn.v_proj": "colwise",
    "model.layers.*.self_attn.o_proj": "rowwise", "model.layers.*.self_attn.qkv_proj": "colwise"})";
  auto r0 = run_command(kBin + train_args(single, 2));
  ASSERT_EQ(r0.exit_code, 0) << r0.err;
  auto r1 = run_command(kBin + " launch -n 2 --" + train_args(tp, 2) + " --tp_size 2 --tp_plan " +
                        (tp / "plan.json").string());
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  expect_same_losses(tp, single);
  EXPECT_NE(r1.err.find("warning: tp_plan rule 'model.layers.*.self_attn.qkv_proj' matches no layer"), std::string::npos)
      << r1.err;
  EXPECT_NE(r1.err.find("warning: layer model.layers.1.mlp.down_proj is not sharded by the tp_plan"),
            std::string::npos)
      << r1.err;
  EXPECT_EQ(r1.err.find("self_attn.q_proj is not sharded"), std::string::npos) << r1.err;
  // A style upstream does not know is a usage error naming the rule; nothing is written.
  std::ofstream(tp / "bad_plan.json") << R"({"model.layers.*.self_attn.q_proj": "diagonal"})";
  auto r2 = run_command(kBin + " launch -n 2 --" + train_args(bad, 2) + " --tp_size 2 --tp_plan " +
                        (tp / "bad_plan.json").string());
  EXPECT_EQ(r2.exit_code, 2) << r2.err;
  EXPECT_NE(r2.err.find("Unsupported tensor parallel style 'diagonal' for layer 'model.layers.*.self_attn.q_proj'"),
            std::string::npos)
      << r2.err;
  EXPECT_FALSE(fs::exists(bad / "model.safetensors"));
  for (auto& d : {single, tp, bad}) fs::remove_all(d);
}

TEST(DistributedCli, MixtralTrainsWithExpertParallelismAndABadEpSizeIsRejected) {
  auto single = temp_dir("moe_single"), ep = temp_dir("moe_ep2"), bad = temp_dir("moe_bad");
  const std::string moe = " --config_name " + kSource + "/configs/mixtral-tiny";
  auto r0 = run_command(kBin + train_args(single, 2) + moe);
  ASSERT_EQ(r0.exit_code, 0) << r0.err;
  auto r1 = run_command(kBin + " launch -n 2 --" + train_args(ep, 1) + moe + " --dp_shard_size 2 --ep_size 2");
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  expect_same_losses(ep, single);
  auto logged = metrics_of(ep);
  ASSERT_FALSE(logged.empty());
  EXPECT_EQ(logged[0]["tokens_per_expert"].size(), 2u) << logged[0];  // mixtral-tiny's 2 MoE layers
  // Router masking over every other rank of tp 4; the pairs holding the same experts split them inside.
  auto masked = temp_dir("moe_allreduce");
  auto r4 = run_command(kBin + " launch -n 4 --" + train_args(masked, 2) + moe +
                        " --tp_size 4 --ep_size 2 --ep_mode allreduce");
  ASSERT_EQ(r4.exit_code, 0) << r4.err;
  expect_same_losses(masked, single);
  fs::remove_all(masked);
  // A capacity factor drops assignments and counts them.
  auto dropping = temp_dir("moe_drop");
  auto r2 = run_command(kBin + train_args(dropping, 2) + moe + " --moe_capacity_factor 0.5");
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  auto dropped = metrics_of(dropping);
  ASSERT_EQ(dropped.size(), kSteps);
  EXPECT_GT(dropped[0]["dropped_tokens"].get<int64_t>(), 0) << dropped[0];
  fs::remove_all(dropping);
  // ep must divide the dp_shard x cp ranks it is drawn from.
  auto r3 = run_command(kBin + " launch -n 2 --" + train_args(bad, 1) + moe + " --dp_shard_size 2 --ep_size 3");
  EXPECT_EQ(r3.exit_code, 2);
  EXPECT_NE(r3.err.find("ep_size 3 must divide dp_shard_size 2 x cp_size 1"), std::string::npos) << r3.err;
  EXPECT_FALSE(fs::exists(bad / "model.safetensors"));
  for (auto& d : {single, ep, bad}) fs::remove_all(d);
}

TEST(DistributedCli, ARankThatNeverArrivesEndsTheRunNamingIt) {
  auto out = temp_dir("alone");
  const auto start = Clock::now();
  auto r = run_command("RANK=0 WORLD_SIZE=2 LOCAL_RANK=0 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
                       std::to_string(test_port()) + " " + kBin + train_args(out, 2) +
                       " --dp_replicate_size 2 --timeout 3");
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("rank(s) 1 of 2 never arrived"), std::string::npos) << r.err;
  EXPECT_LT(seconds, 20.0);
  fs::remove_all(out);
}

TEST(DistributedCli, ARankThatDiesMidRunEndsTheOthersWithinTheTimeout) {
  auto out0 = temp_dir("mid0"), out1 = temp_dir("mid1");
  const std::string env = "MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(test_port() + 1) +
                          " WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 ";
  const std::string long_run = " --dp_replicate_size 2 --timeout 15 --max_steps 1000000 --logging_steps 1000000";
  // Rank 1 is killed with SIGKILL after 5 s; rank 0 must notice and exit on its own.
  const std::string script = "(" + env + "RANK=1 LOCAL_RANK=1 " + kBin + train_args(out1, 2) + long_run +
                             " >/dev/null 2>&1 & p=$!; sleep 5; kill -9 $p) & " + env + "RANK=0 LOCAL_RANK=0 " + kBin +
                             train_args(out0, 2) + long_run;
  const auto start = Clock::now();
  auto r = run_command("bash -c '" + script + "'");
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("rank 0: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(" on group "), std::string::npos) << r.err;  // names the operation and its group
  EXPECT_LT(seconds, 5 + 15 + 10);
  fs::remove_all(out0);
  fs::remove_all(out1);
}

// Pipeline parallelism from the command line: two stages of llama-tiny's two layers reproduce the
// single-rank run (losses and the saved model byte for byte) and count their point-to-point
// bytes; `plan` shows the stages; each bad input is one clear line with exit code 2.
TEST(DistributedCli, TwoPipelineStagesReproduceOneRankAndBadPipelineInputIsRejected) {
  auto single = temp_dir("pp_single"), pp = temp_dir("pp2"), bad = temp_dir("pp_bad");
  const std::string accum = " --gradient_accumulation_steps 2";
  auto r0 = run_command(kBin + train_args(single, 2) + accum);
  ASSERT_EQ(r0.exit_code, 0) << r0.err;
  auto r1 = run_command(kBin + " launch -n 2 --" + train_args(pp, 2) + accum + " --pp_size 2");
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  expect_same_losses(pp, single);
  EXPECT_TRUE(slurp(pp / "model.safetensors") == slurp(single / "model.safetensors"));
  // Stage 0 sends 2 micro-batches of [2, 32, 64] fp32 activations, and the loss and grad-norm sums.
  EXPECT_EQ(metrics_of(pp)[0]["bytes_sent_per_step"]["pp"].get<double>(), 2 * 2 * 32 * 64 * 4 + 8 + 8);

  auto plan = run_command(kBin + " plan --world 4 --pp_size 2 --dp_shard_size 2 --config_name " + kSource +
                          "/configs/llama-tiny");
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  for (auto line : {"mesh pp=2 dp_replicate=1 dp_shard=2", "rank 2: pp=1 dp_replicate=0 dp_shard=0",
                    "stage 0 (ranks 0-1): layers 0-0 + embed_tokens", "stage 1 (ranks 2-3): layers 1-1 + norm, lm_head"})
    EXPECT_NE(plan.out.find(line), std::string::npos) << line << " not in\n" << plan.out;
  auto moe_plan = run_command(kBin + " plan --world 2 --pp_size 2 --config_name " + kSource + "/configs/mixtral-tiny");
  ASSERT_EQ(moe_plan.exit_code, 0) << moe_plan.err;  // MoE models are cut into stages too
  EXPECT_NE(moe_plan.out.find("stage 1 (ranks 1-1): layers 1-1 + norm, lm_head"), std::string::npos) << moe_plan.out;

  auto expect_error = [&](const std::string& command, const std::string& phrase) {
    auto r = run_command(kBin + command);
    EXPECT_EQ(r.exit_code, 2) << command << "\n" << r.err;
    EXPECT_NE(r.err.find(phrase), std::string::npos) << command << "\n" << r.err;
  };
  expect_error(" launch -n 2 --" + train_args(bad, 2) + " --pp_size 2",
               "pipeline parallelism with pp_size 2 needs at least 2 micro-batches per step, but "
               "--gradient_accumulation_steps is 1");
  expect_error(train_args(bad, 2) + " --pipeline_parallel_schedule Foo",
               "unknown --pipeline_parallel_schedule 'Foo': the schedules are GPipe, 1F1B, Interleaved1F1B, "
               "InterleavedZeroBubble");
  expect_error(train_args(bad, 2) + " --pipeline_parallel_schedule ZBVZeroBubble",
               "--pipeline_parallel_schedule ZBVZeroBubble is not implemented yet");
  expect_error(train_args(bad, 2) + " --pipeline_parallel_schedule GPipe --pp_virtual_stages 2",
               "--pp_virtual_stages 2: the GPipe schedule has one stage per rank and no virtual stages");
  expect_error(train_args(bad, 2) + " --pp_virtual_stages 2",
               "--pp_virtual_stages 2: the 1F1B schedule has one stage per rank and no virtual stages");
  expect_error(" launch -n 2 --" + train_args(bad, 1) + " --pp_size 2 --gradient_accumulation_steps 5"
               " --pipeline_parallel_schedule Interleaved1F1B --pp_virtual_stages 1",
               "--pipeline_parallel_schedule Interleaved1F1B with pp_size 2 splits --gradient_accumulation_steps 5 "
               "into max(1, 5 / 2) = 2 rounds of equal size; use a multiple of 2");
  const std::string tiny = " --config_name " + kSource + "/configs/llama-tiny";
  expect_error(" plan --world 4 --pp_size 4" + tiny, "pp_size 4 asks for more pipeline stages than the model's 2 "
               "decoder layers");
  expect_error(" plan --world 2 --pp_size 2 --pp_layers_per_stage 2,1" + tiny,
               "--pp_layers_per_stage gives 2 stage(s) of 3 layers in all");
  const auto six_layers = bad / "six-layers";  // 6 layers on 2 x 2 stages
  fs::create_directories(six_layers);
  auto config = nlohmann::json::parse(slurp(fs::path(kSource) / "configs/llama-tiny/config.json"));
  config["num_hidden_layers"] = 6;
  std::ofstream(six_layers / "config.json") << config.dump();
  expect_error(" plan --world 2 --pp_size 2 --pipeline_parallel_schedule Interleaved1F1B --config_name " +
                   six_layers.string(),
               "pp_size 2 x pp_virtual_stages 2 (4 stages) does not divide the model's 6 decoder layers evenly");
  expect_error(" plan --world 2 --pp_size 2 --pipeline_parallel_schedule InterleavedZeroBubble --ac_mode full" + tiny +
                   " --pp_virtual_stages 1",
               "--pipeline_parallel_schedule InterleavedZeroBubble splits each backward in two, which activation "
               "checkpointing does not support");
  expect_error(" plan --world 2 --pp_size 2 --pipeline_parallel_schedule InterleavedZeroBubble --pp_virtual_stages 1 "
               "--config_name " + kSource + "/configs/mixtral-tiny",
               "MoE models (mixtral) run under pipeline parallelism with one stage per rank and whole backwards (GPipe, "
               "1F1B); InterleavedZeroBubble with pp_virtual_stages 1 does not support them yet");
  EXPECT_FALSE(fs::exists(bad / "model.safetensors"));
  for (auto& d : {single, pp, bad}) fs::remove_all(d);
}

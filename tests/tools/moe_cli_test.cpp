// MoE models through the CLI: configs/mixtral-tiny trains, logs its routing, saves a checkpoint
// transformers loads with the same eval loss; a fused-expert checkpoint exports fused from one
// rank and from FSDP; info counts MoE parameters as transformers does.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "io/hf_checkpoint.h"
#include "models/hf_weights.h"
#include "support/run_command.h"

using namespace meshtrain;
using namespace meshtrain::testing;
namespace fs = std::filesystem;

TEST(MoeCli, MixtralTinyTrainsAndTransformersReadsTheResult) {
  auto dir = fs::temp_directory_path() / ("mt_moe_cli_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto train = run_command(kBin + " train --config_name " + kSource + "/configs/mixtral-tiny --args " + kSource +
                           "/configs/mixtral-tiny/train.json --data " + kSource +
                           "/data/corpus.txt --seq_len 32 --per_device_train_batch_size 4 --max_steps 4 "
                           "--warmup_steps 1 --logging_steps 2 --save_steps 0 --output_dir " +
                           (dir / "run").string());
  ASSERT_EQ(train.exit_code, 0) << train.err;
  auto logged = metrics_of(dir / "run");
  ASSERT_EQ(logged.size(), 2u);
  for (auto& j : logged) {
    EXPECT_GT(j["aux_loss"].get<double>(), 0.0) << j;
    EXPECT_EQ(j["dropped_tokens"], 0) << j;  // dropless
    EXPECT_EQ(j["tokens_per_expert"].size(), 2u) << j;
  }
  EXPECT_TRUE(run_command("grep -q block_sparse_moe.experts.3.w2.weight " + (dir / "run/model.safetensors").string())
                  .exit_code == 0);

  std::string text = meshtrain::testing::slurp(kSource + "/data/corpus.txt").substr(0, 32 * 16);
  std::ofstream(dir / "eval.txt") << text;
  auto eval = run_command(kBin + " eval --model_name_or_path " + (dir / "run").string() + " --data " +
                          (dir / "eval.txt").string() + " --seq_len 32");
  ASSERT_EQ(eval.exit_code, 0) << eval.err;
  const double ours = printed_value(eval.out, "eval_loss");
  auto hf = run_command(hf_check_command("eval " + (dir / "run").string() + " " +
                        (dir / "eval.txt").string() + " 32"));
  ASSERT_EQ(hf.exit_code, 0) << hf.err;
  EXPECT_NEAR(ours, printed_value(hf.out, "hf_eval_loss"), 1e-5 * ours);
  fs::remove_all(dir);
}

TEST(MoeCli, InfoCountsMoeParametersAsTransformersDoes) {
  for (std::string name : {"mixtral-tiny", "qwen3-moe-tiny"}) {
    auto r = run_command(kBin + " info " + kSource + "/configs/" + name);
    ASSERT_EQ(r.exit_code, 0) << r.err;
      auto hf = run_command(hf_check_command("params " + kSource + "/configs/" + name));
    ASSERT_EQ(hf.exit_code, 0) << hf.err;
    EXPECT_EQ(printed_value(r.out, "parameters"), printed_value(hf.out, "parameters")) << name;
  }
}

TEST(MoeCli, AFusedExpertCheckpointTrainsOnOneRankAndUnderFsdpAndExportsFused) {
  // tests/golden/mixtral saved with fused experts (mlp.experts.gate_up_proj), as some tools write it.
  auto dir = fs::temp_directory_path() / ("mt_moe_fused_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  auto config = models::LlamaConfig::load(kSource + "/tests/golden/mixtral");
  config.moe->checkpoint_layout = models::ExpertLayout::Fused;
  auto model = std::make_shared<models::LlamaForCausalLM>(config);
  models::load_hf_weights(*model, io::CheckpointReader(kSource + "/tests/golden/mixtral"));
  models::save_hf_checkpoint(*model, dir / "fused");
  ASSERT_TRUE(io::CheckpointReader(dir / "fused").contains("model.layers.0.mlp.experts.gate_up_proj"));

  const std::string args = " train --model_name_or_path " + (dir / "fused").string() + " --data " + kSource +
                           "/data/corpus.txt --seq_len 32 --per_device_train_batch_size 2 --max_steps 2 "
                           "--logging_steps 1 --save_steps 0 --output_dir ";
  auto one = run_command(kBin + args + (dir / "one").string());
  ASSERT_EQ(one.exit_code, 0) << one.err;
  auto fsdp = run_command(kBin + " launch -n 2 --" + args + (dir / "fsdp").string() + " --dp_shard_size 2 "
                          "--per_device_train_batch_size 1");
  ASSERT_EQ(fsdp.exit_code, 0) << fsdp.err;
  auto a = metrics_of(dir / "one"), b = metrics_of(dir / "fsdp");
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 2u);
  for (size_t i = 0; i < 2; ++i) EXPECT_NEAR(b[i]["loss"].get<double>(), a[i]["loss"].get<double>(), 1e-5);

  std::ofstream(dir / "eval.txt") << slurp(kSource + "/data/corpus.txt").substr(0, 32 * 8);
  for (auto run : {"one", "fsdp"}) {
    io::CheckpointReader saved(dir / run);
    EXPECT_TRUE(saved.contains("model.layers.1.mlp.experts.down_proj")) << run;
    for (auto& name : saved.names()) EXPECT_EQ(name.find(".experts.0."), std::string::npos) << run << ": " << name;
    // transformers reads the export and gets our eval loss.
    auto ours = run_command(kBin + " eval --model_name_or_path " + (dir / run).string() + " --data " +
                            (dir / "eval.txt").string() + " --seq_len 32");
    ASSERT_EQ(ours.exit_code, 0) << ours.err;
    auto hf = run_command(hf_check_command("eval " + (dir / run).string() + " " + (dir / "eval.txt").string() + " 32"));
    ASSERT_EQ(hf.exit_code, 0) << hf.err;
    const double loss = printed_value(ours.out, "eval_loss");
    EXPECT_NEAR(printed_value(hf.out, "hf_eval_loss"), loss, 1e-5 * loss) << run;
  }
  fs::remove_all(dir);
}

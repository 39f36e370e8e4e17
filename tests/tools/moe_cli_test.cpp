// MoE models through the CLI: configs/mixtral-tiny trains, logs its routing, saves a checkpoint
// transformers loads with the same eval loss; info counts MoE parameters as transformers does.
#include <gtest/gtest.h>

#include <filesystem>

#include "support/run_command.h"

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

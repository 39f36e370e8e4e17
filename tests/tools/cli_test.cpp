// The meshtrain executable as a user meets it: the default job, the train -> eval -> generate
// path, --args under flags, resuming from the latest checkpoint, what transformers makes of the
// saved model, and one clear line with exit code 2 (usage) or 1 (bad input) for every mistake,
// with nothing overwritten.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dist/device.h"
#include "support/run_command.h"

using namespace meshtrain::testing;
namespace fs = std::filesystem;

namespace {

int count_lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

class Cli : public ::testing::Test {
 protected:
  // One trained model shared by the tests of this suite.
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("mt_cli_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::string text = meshtrain::testing::slurp(kSource + "/data/corpus.txt").substr(0, 64 * 40);
    std::ofstream(dir_ / "eval.txt") << text;
    train_result_ = run_command(kBin + " train --config_name " + kSource +
                                "/configs/llama-tiny/config.json --data " + kSource +
                                "/data/corpus.txt --seq_len 64 --per_device_train_batch_size 4 "
                                "--max_steps 5 --save_steps 0 --learning_rate 3e-3 --output_dir " +
                                (dir_ / "run").string());
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static fs::path dir_;
  static meshtrain::testing::CommandResult train_result_;
};

fs::path Cli::dir_;
meshtrain::testing::CommandResult Cli::train_result_;

void expect_one_line_error(const std::string& args, int code, const std::string& phrase) {
  auto r = run_command(kBin + " " + args);
  EXPECT_EQ(r.exit_code, code) << args << "\n" << r.err;
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(phrase), std::string::npos) << r.err;
}

}  // namespace

TEST_F(Cli, TrainSavesAnHfModelAndNoIntermediateCheckpoints) {
  ASSERT_EQ(train_result_.exit_code, 0) << train_result_.err;
  EXPECT_TRUE(fs::exists(dir_ / "run/config.json"));
  EXPECT_TRUE(fs::exists(dir_ / "run/model.safetensors"));
  EXPECT_EQ(count_lines(meshtrain::testing::slurp(dir_ / "run/metrics.jsonl")), 1);  // step 5 of 5
  EXPECT_FALSE(fs::exists(dir_ / "run/runs"));  // report_to defaults to none: no TensorBoard files
  for (auto& e : fs::directory_iterator(dir_ / "run"))
    EXPECT_FALSE(e.path().filename().string().starts_with("checkpoint-")) << e.path();
}

TEST_F(Cli, EvalMatchesTransformersOnTheSavedModel) {
  ASSERT_EQ(train_result_.exit_code, 0);
  auto r = run_command(kBin + " eval --model_name_or_path " + (dir_ / "run").string() + " --data " +
                       (dir_ / "eval.txt").string() + " --seq_len 64");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const double ours = printed_value(r.out, "eval_loss");
  EXPECT_EQ(printed_value(r.out, "eval_tokens"), 40 * 63);
  auto hf = run_command(hf_check_command("eval " + (dir_ / "run").string() +
                        " " + (dir_ / "eval.txt").string() + " 64"));
  ASSERT_EQ(hf.exit_code, 0) << hf.err;
  EXPECT_NEAR(ours, printed_value(hf.out, "hf_eval_loss"), 1e-5 * ours);
}

TEST_F(Cli, GenerateIsGreedyOrSeededTopKSamplingAtATemperature) {
  ASSERT_EQ(train_result_.exit_code, 0);
  auto generated = [](const std::string& flags) {
    auto r = run_command(kBin + " generate --model_name_or_path " + (dir_ / "run").string() + " --prompt 'The GNU' " +
                         flags);
    EXPECT_EQ(r.exit_code, 0) << flags << "\n" << r.err;
    return r.out;
  };
  const auto greedy = generated("--max_new_tokens 12");
  EXPECT_TRUE(greedy.starts_with("The GNU")) << greedy;
  EXPECT_EQ(greedy.size(), 7u + 12u + 1u) << greedy;  // the prompt, 12 bytes, a newline
  EXPECT_EQ(generated("--max_new_tokens 0"), "The GNU\n");
  EXPECT_EQ(generated("--max_new_tokens 12"), greedy);
  // The one most likely token is the greedy choice, at any temperature; so is the top of 50 when cold.
  EXPECT_EQ(generated("--max_new_tokens 12 --top_k 1 --temperature 5 --seed 9"), greedy);
  EXPECT_EQ(generated("--max_new_tokens 12 --top_k 50 --temperature 0.001 --seed 9"), greedy);
  // Sampling: the same seed gives the same text, another seed another one.
  const auto sampled = generated("--max_new_tokens 12 --top_k 50 --seed 3");
  EXPECT_EQ(sampled.size(), greedy.size()) << sampled;
  EXPECT_NE(sampled, greedy);
  EXPECT_EQ(generated("--max_new_tokens 12 --top_k 50 --seed 3"), sampled);
  EXPECT_NE(generated("--max_new_tokens 12 --top_k 50 --seed 4"), sampled);
  expect_one_line_error("generate --model_name_or_path " + (dir_ / "run").string() + " --prompt x --temperature 0", 2,
                        "--temperature > 0");
}

TEST_F(Cli, ArgsFileIsReadFlagsOverrideItAndItsErrorsAreOneLine) {
  const auto args = dir_ / "args.json";
  std::ofstream(args) << R"({"learning_rate": 0.5, "lr_scheduler_type": "constant", "max_steps": 2,
                             "logging_steps": 1, "save_steps": 0})";
  const auto out = dir_ / "args_run";
  auto r = run_command(kBin + " train --config_name " + kSource + "/configs/llama-tiny --data " + kSource +
                       "/data/corpus.txt --seq_len 32 --per_device_train_batch_size 2 --args " + args.string() +
                       " --learning_rate 0.01 --output_dir " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto logged = metrics_of(out);
  ASSERT_EQ(logged.size(), 2u);  // max_steps and logging_steps from the file
  for (auto& j : logged) EXPECT_EQ(j["lr"].get<double>(), 0.01) << j;  // the flag's rate, the file's schedule

  std::ofstream(dir_ / "typo.json") << R"({"learning_rat": 0.5})";
  expect_one_line_error("train --args " + (dir_ / "typo.json").string(), 2,
                        (dir_ / "typo.json").string() + ": unknown training argument 'learning_rat'");
  std::ofstream(dir_ / "broken.json") << R"({"learning_rate": )";
  expect_one_line_error("train --args " + (dir_ / "broken.json").string(), 2, "broken.json is not valid JSON");
  expect_one_line_error("train --args " + (dir_ / "missing.json").string(), 1, "missing.json");
}

TEST_F(Cli, ActivationCheckpointingTrainsTheSameCurve) {
  const std::string args = " train --config_name " + kSource + "/configs/llama-tiny --data " + kSource +
                           "/data/corpus.txt --seq_len 32 --per_device_train_batch_size 2 --max_steps 3 "
                           "--save_steps 0 --logging_steps 1 --output_dir ";
  std::vector<std::vector<nlohmann::json>> curves;
  for (std::string ac : {"", " --gradient_checkpointing", " --ac_mode selective --ac_every 2"}) {
    const auto out = dir_ / ("ac" + std::to_string(curves.size()));
    auto r = run_command(kBin + args + out.string() + ac);
    ASSERT_EQ(r.exit_code, 0) << ac << "\n" << r.err;
    curves.push_back(metrics_of(out));
    ASSERT_EQ(curves.back().size(), 3u) << ac;
  }
  for (size_t c = 1; c < curves.size(); ++c)
    for (size_t s = 0; s < 3; ++s) {
      const double want = curves[0][s]["loss"];
      EXPECT_NEAR(curves[c][s]["loss"].get<double>(), want, 1e-6 * want) << "curve " << c << " step " << s + 1;
    }
}

TEST_F(Cli, ResumeFromLatestContinuesTheRunExactly) {
  const std::string args = " train --config_name " + kSource + "/configs/llama-tiny --data " + kSource +
                           "/data/corpus.txt --seq_len 32 --per_device_train_batch_size 2 --max_steps 6 "
                           "--save_steps 2 --logging_steps 1 --warmup_steps 2 --output_dir ";
  const auto full = dir_ / "full", resumed = dir_ / "resumed";
  auto r = run_command(kBin + args + full.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // A copy of checkpoints 2 and 4: "latest" must pick 4 and run steps 5 and 6 as the full run did.
  fs::create_directories(resumed);
  for (auto step : {"checkpoint-2", "checkpoint-4"})
    fs::copy(full / step, resumed / step, fs::copy_options::recursive);
  auto again = run_command(kBin + args + resumed.string() + " --resume_from_checkpoint latest");
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.err.find("resumed from " + (resumed / "checkpoint-4").string() + " at step 4"), std::string::npos)
      << again.err;
  auto a = metrics_of(full), b = metrics_of(resumed);
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(b.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(b[i]["step"], a[i + 4]["step"]);
    EXPECT_EQ(b[i]["loss"].get<double>(), a[i + 4]["loss"].get<double>()) << "step " << i + 5;
    EXPECT_EQ(b[i]["lr"].get<double>(), a[i + 4]["lr"].get<double>()) << "step " << i + 5;
  }
  expect_one_line_error(args.substr(1) + (dir_ / "empty").string() + " --resume_from_checkpoint latest", 1,
                        "--resume_from_checkpoint latest: no checkpoint-N in");
}

TEST_F(Cli, InfoCountsParametersAsTransformersDoes) {
  auto r = run_command(kBin + " info " + kSource + "/configs/llama-small");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("flops_per_token:"), std::string::npos);
  EXPECT_NE(r.out.find("at::get_num_threads()"), std::string::npos);
  auto hf = run_command(hf_check_command("params " + kSource + "/configs/llama-small"));
  ASSERT_EQ(hf.exit_code, 0) << hf.err;
  EXPECT_EQ(printed_value(r.out, "parameters"), printed_value(hf.out, "parameters"));
}

TEST_F(Cli, UsageErrorsAreOneLineWithExitCode2) {
  expect_one_line_error("train --bogus 1", 2, "unknown flag --bogus");
  expect_one_line_error("train --max_steps ten", 2, "--max_steps expects an integer, got 'ten'");
  expect_one_line_error("train --lr_scheduler_type exp", 2, "--lr_scheduler_type must be one of");
  expect_one_line_error("train --warmup_steps 9 --max_steps 3", 2, "--warmup_steps must be in [0, max_steps=3], got 9");
  expect_one_line_error("train --seq_len 1", 2, "--seq_len must be at least 2");
  expect_one_line_error("eval --data x.txt", 2, "--model_name_or_path is required");
  expect_one_line_error("frobnicate", 2, "unknown command 'frobnicate'");
  expect_one_line_error("train --ac_mode sometimes", 2, "--ac_mode must be none, full or selective, got 'sometimes'");
  expect_one_line_error("train --ac_mode selective --ac_every 0", 2, "--ac_every must be at least 1, got 0");
  expect_one_line_error("train --ac_every 3", 2, "--ac_every applies to --ac_mode selective");
  expect_one_line_error("train --gradient_checkpointing --ac_mode selective", 2,
                        "--gradient_checkpointing is --ac_mode full; it contradicts --ac_mode selective");
  expect_one_line_error("train --bf16 --fp16", 2, "--fp16 is not supported: fp16 training needs loss scaling; use --bf16");
  expect_one_line_error("train --reduce_dtype fp8", 2, "--reduce_dtype must be fp32 or bf16, got 'fp8'");
  expect_one_line_error("train --device tpu", 2, "--device must be cpu or cuda, got 'tpu'");
  expect_one_line_error("train --device cpu --backend nccl", 2, "--backend nccl needs --device cuda");
  if (meshtrain::dist::cuda_device_count() == 0)
    expect_one_line_error("train --device cuda", 2, "--device cuda: ");
  EXPECT_EQ(run_command(kBin + " train --help").exit_code, 0);
  EXPECT_EQ(run_command(kBin + " --help").exit_code, 0);
}

TEST_F(Cli, BadInputIsOneLineWithExitCode1AndOverwritesNothing) {
  ASSERT_EQ(train_result_.exit_code, 0);
  expect_one_line_error("train --config_name /nonexistent/config.json", 1, "/nonexistent/config.json");
  expect_one_line_error("train --config_name " + kSource + "/configs/llama-tiny --data /nonexistent.npy", 1,
                        "/nonexistent.npy");

  // A truncated checkpoint: rejected before anything is written to the output directory.
  auto broken = dir_ / "broken";
  fs::create_directories(broken);
  fs::copy_file(dir_ / "run/config.json", broken / "config.json");
  fs::copy_file(dir_ / "run/model.safetensors", broken / "model.safetensors");
  fs::resize_file(broken / "model.safetensors", fs::file_size(broken / "model.safetensors") - 100);
  auto out = dir_ / "out";
  fs::create_directories(out);
  std::ofstream(out / "model.safetensors") << "precious";
  expect_one_line_error("train --model_name_or_path " + broken.string() + " --output_dir " + out.string(), 1,
                        "model.safetensors");
  EXPECT_EQ(meshtrain::testing::slurp(out / "model.safetensors"), "precious");
  EXPECT_FALSE(fs::exists(out / "metrics.jsonl"));
}

TEST(DefaultJob, TrainsLlamaTinyOnTheCorpusWithItsTrainJson) {
  // The README's first command, `meshtrain train`, with only the output directory moved.
  const auto out = fs::temp_directory_path() / ("mt_default_job_" + std::to_string(::getpid()));
  fs::remove_all(out);
  auto r = run_command("cd " + kSource + " && " + kBin + " train --output_dir " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("total_train_batch_size 16 x 256 tokens, 300 steps"), std::string::npos) << r.err;
  auto logged = metrics_of(out);
  ASSERT_EQ(logged.size(), 30u);  // logging_steps 10
  EXPECT_EQ(logged[0]["tokens"], 10 * 16 * 256);
  EXPECT_NEAR(logged[0]["lr"].get<double>(), 3e-3 * 9 / 30, 1e-12);  // step 10 of 30 warmup steps
  EXPECT_NEAR(logged[29]["lr"].get<double>(), 3e-3 * 0.5 * (1 + std::cos(M_PI * 269 / 270)), 1e-12);  // cosine
  EXPECT_GT(logged.front()["loss"].get<double>(), 3.5);
  EXPECT_LT(logged.back()["loss"].get<double>(), 2.2);  // it learns the corpus
  EXPECT_TRUE(fs::exists(out / "checkpoint-100") && fs::exists(out / "checkpoint-200"));
  EXPECT_FALSE(fs::exists(out / "checkpoint-300"));  // the final model instead
  EXPECT_TRUE(fs::exists(out / "model.safetensors"));
  fs::remove_all(out);
}

// The meshtrain executable as a user meets it: the train -> eval -> generate path, what
// transformers makes of the saved model, and one clear line with exit code 2 (usage) or 1
// (bad input) for every mistake, with nothing overwritten.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "run_command.h"

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
  if (kPython.empty()) GTEST_SKIP() << "no Python with transformers";
  auto hf = run_command(hf_check_command("eval " + (dir_ / "run").string() +
                        " " + (dir_ / "eval.txt").string() + " 64"));
  ASSERT_EQ(hf.exit_code, 0) << hf.err;
  EXPECT_NEAR(ours, printed_value(hf.out, "hf_eval_loss"), 1e-5 * ours);
}

TEST_F(Cli, GenerateContinuesThePrompt) {
  ASSERT_EQ(train_result_.exit_code, 0);
  for (std::string sampling : {"", " --top_k 5 --seed 3"}) {
    auto r = run_command(kBin + " generate --model_name_or_path " + (dir_ / "run").string() +
                         " --prompt 'The GNU' --max_new_tokens 12" + sampling);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(r.out.starts_with("The GNU")) << r.out;
    EXPECT_GE(r.out.size(), 7u + 1u);
  }
}

TEST_F(Cli, InfoCountsParametersAsTransformersDoes) {
  auto r = run_command(kBin + " info " + kSource + "/configs/llama-small");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("flops_per_token:"), std::string::npos);
  EXPECT_NE(r.out.find("at::get_num_threads()"), std::string::npos);
  if (kPython.empty()) GTEST_SKIP() << "no Python with transformers";
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

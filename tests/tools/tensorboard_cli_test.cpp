// --report_to tensorboard through the CLI: TensorBoard's own reader (tests/tools/tensorboard_check.py)
// finds every number of metrics.jsonl at its step (eval rows too), for a dense run, the same run resumed (one
// curve, no step twice) and a MoE run's per-expert load; a bad --report_to is one line, nothing written.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "support/run_command.h"

using namespace meshtrain::testing;
namespace fs = std::filesystem;

namespace {

struct RunDir {
  fs::path path = fs::temp_directory_path() / ("mt_tb_cli_" + std::to_string(::getpid()));
  RunDir() {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~RunDir() { fs::remove_all(path); }
};

CommandResult tensorboard_check(const fs::path& run, const fs::path& logdir, const std::string& tags = "") {
  return run_command(kPython + " " + kSource + "/tests/tools/tensorboard_check.py " + run.string() + " " +
                     logdir.string() + " " + tags);
}

std::vector<fs::path> event_files(const fs::path& logdir) {
  std::vector<fs::path> out;
  for (auto& e : fs::directory_iterator(logdir))
    if (e.path().filename().string().starts_with("events.out.tfevents.")) out.push_back(e.path());
  return out;
}

const std::string kDense = " train --config_name " + kSource + "/configs/llama-tiny --data " + kSource +
                           "/data/corpus.txt --seq_len 32 --per_device_train_batch_size 2 --logging_steps 1 "
                           "--report_to tensorboard --validation_split_percentage 1 --eval_steps 2 --output_dir ";

}  // namespace

TEST(TensorBoardCli, EveryMetricIsAScalarAtItsStepAndAResumeKeepsOneCurve) {
  RunDir dir;
  const fs::path run = dir.path / "run", logdir = run / "runs";
  auto first = run_command(kBin + kDense + run.string() + " --max_steps 4 --save_steps 2");
  ASSERT_EQ(first.exit_code, 0) << first.err;
  ASSERT_EQ(event_files(logdir).size(), 1u);
  auto check = tensorboard_check(run, logdir, "train/loss train/grad_norm train/learning_rate train/tokens_per_s");
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  EXPECT_NE(check.out.find("scalars of 6 records: 0 differences"), std::string::npos) << check.out;

  // The checker fails on a value TensorBoard does not hold.
  fs::create_directories(dir.path / "edited");
  auto rows = metrics_of(run);
  rows[1]["loss"] = rows[1]["loss"].get<double>() + 1e-3;
  std::ofstream edited(dir.path / "edited/metrics.jsonl");
  for (auto& j : rows) edited << j.dump() << "\n";
  edited.close();
  auto caught = tensorboard_check(dir.path / "edited", logdir);
  EXPECT_EQ(caught.exit_code, 1) << caught.out << caught.err;
  EXPECT_NE(caught.out.find("train/loss at step 2:"), std::string::npos) << caught.out;

  // Resumed from checkpoint-2 to another max_steps (another LR schedule): steps 3 and 4 are logged
  // again with other values, and TensorBoard shows only the new ones.
  auto resumed = run_command(kBin + kDense + run.string() + " --max_steps 5 --save_steps 2 "
                             "--resume_from_checkpoint latest");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_EQ(event_files(logdir).size(), 2u);  // one per run start
  // Rows: steps 1, 2, eval 2, 3, 4, eval 4, 5, eval 5.
  ASSERT_EQ(metrics_of(run).size(), 8u);
  EXPECT_NE(metrics_of(run)[3]["lr"], rows[3]["lr"]);
  check = tensorboard_check(run, logdir);
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  EXPECT_NE(check.out.find("scalars of 8 records: 0 differences"), std::string::npos) << check.out;
}

TEST(TensorBoardCli, AMoeRunLogsEachExpertsLoadUnderLoggingDir) {
  RunDir dir;
  const fs::path run = dir.path / "moe", logdir = dir.path / "tb";
  auto r = run_command(kBin + " train --config_name " + kSource + "/configs/mixtral-tiny --args " + kSource +
                       "/configs/mixtral-tiny/train.json --data " + kSource +
                       "/data/corpus.txt --seq_len 32 --per_device_train_batch_size 2 --max_steps 2 "
                       "--warmup_steps 1 --logging_steps 1 --save_steps 0 --report_to all --logging_dir " +
                       logdir.string() + " --output_dir " + run.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(run / "runs"));
  ASSERT_EQ(event_files(logdir).size(), 1u);
  // mixtral-tiny: 2 MoE layers of 4 experts.
  auto check = tensorboard_check(run, logdir, "train/aux_loss train/dropped_tokens moe/layer_0/expert_0 "
                                              "moe/layer_1/expert_3");
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  EXPECT_NE(check.out.find("scalars of 2 records: 0 differences"), std::string::npos) << check.out;
}

TEST(TensorBoardCli, AnUnknownReportToIsOneLineAndWritesNothing) {
  RunDir dir;
  const fs::path run = dir.path / "bad";
  auto r = run_command(kBin + kDense + run.string() + " --max_steps 1 --report_to wandb");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("--report_to must be one of tensorboard, none, all; got 'wandb'"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(run));
}

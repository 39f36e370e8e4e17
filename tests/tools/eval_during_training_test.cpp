// Evaluation during training (HF's eval_strategy / eval_steps / per_device_eval_batch_size):
// eval_loss and eval_ppl rows in metrics.jsonl equal what `meshtrain eval` prints for the same
// model and data, on one rank and under tp; --validation_split_percentage holds out the first
// windows and trains on the rest exactly; bad settings are one line each, nothing written.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "support/run_command.h"

using namespace meshtrain::testing;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kSeq = 32;

class EvalDuringTraining : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mt_evaltrain_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Bytes [start, start + length) of the corpus as a .txt file (the byte tokenizer's tokens).
  fs::path corpus_part(const std::string& name, int64_t start, int64_t length) const {
    const std::string all = slurp(kSource + "/data/corpus.txt");
    const auto path = dir_ / name;
    std::ofstream(path, std::ios::binary) << all.substr(static_cast<size_t>(start), static_cast<size_t>(length));
    return path;
  }

  std::string train(const fs::path& out, const std::string& extra) const {
    return " train --config_name " + kSource + "/configs/llama-tiny --seq_len " + std::to_string(kSeq) +
           " --max_steps 4 --logging_steps 1 --save_steps 0 --learning_rate 3e-3 --per_device_train_batch_size 4"
           " --output_dir " + out.string() + " " + extra;
  }

  double eval_loss_of(const fs::path& model, const fs::path& data) const {
    auto r = run_command(kBin + " eval --model_name_or_path " + model.string() + " --data " + data.string() +
                         " --seq_len " + std::to_string(kSeq) + " --batch_size 5");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return printed_value(r.out, "eval_loss");
  }

  fs::path dir_;
};

std::vector<nlohmann::json> eval_rows(const fs::path& run) {
  std::vector<nlohmann::json> out;
  for (auto& row : metrics_of(run))
    if (row.contains("eval_loss")) out.push_back(row);
  return out;
}

}  // namespace

TEST_F(EvalDuringTraining, EvalRowsEqualMeshtrainEvalOnOneRankAndUnderTp) {
  const auto eval_data = corpus_part("eval.txt", 0, 40 * kSeq + 7);  // 40 windows and a tail
  const auto single = dir_ / "single", tp = dir_ / "tp";
  auto r1 = run_command(kBin + train(single, "--data " + kSource + "/data/corpus.txt --eval_data " +
                                                  eval_data.string() + " --eval_steps 2 --per_device_eval_batch_size 3"));
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  EXPECT_NE(r1.err.find("step 2 eval_loss "), std::string::npos) << r1.err;
  auto rows = eval_rows(single);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["step"], 2);
  EXPECT_EQ(rows[1]["step"], 4);
  EXPECT_EQ(rows[1]["eval_tokens"], 40 * (kSeq - 1));
  const double loss = rows[1]["eval_loss"];
  EXPECT_NEAR(rows[1]["eval_ppl"].get<double>(), std::exp(loss), 1e-9 * std::exp(loss));
  EXPECT_LT(loss, rows[0]["eval_loss"].get<double>());  // training lowers it
  // After the last step the evaluated model is the exported one.
  EXPECT_NEAR(eval_loss_of(single, eval_data), loss, 1e-6 * loss);
  // The training rows are untouched: one per step, with the loss.
  EXPECT_EQ(metrics_of(single).size() - rows.size(), 4u);

  auto r2 = run_command(kBin + " launch -n 2 --" +
                        train(tp, "--data " + kSource + "/data/corpus.txt --eval_data " + eval_data.string() +
                                      " --eval_steps 2 --per_device_eval_batch_size 3 --tp_size 2 --sequence_parallel"));
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  auto tp_rows = eval_rows(tp);
  ASSERT_EQ(tp_rows.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const double want = rows[i]["eval_loss"];
    EXPECT_NEAR(tp_rows[i]["eval_loss"].get<double>(), want, 1e-5 * want) << "eval " << i;
    EXPECT_EQ(tp_rows[i]["eval_tokens"], rows[i]["eval_tokens"]);
  }
}

TEST_F(EvalDuringTraining, ValidationSplitHoldsOutTheFirstWindowsAndTrainsOnTheRest) {
  const int64_t corpus = static_cast<int64_t>(fs::file_size(kSource + "/data/corpus.txt"));
  const int64_t windows = corpus / kSeq, held = windows * 2 / 100;
  const auto split = dir_ / "split", tail = dir_ / "tail";
  auto r1 = run_command(kBin + train(split, "--data " + kSource + "/data/corpus.txt --validation_split_percentage 2"));
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  const auto rows = eval_rows(split);
  ASSERT_EQ(rows.size(), 4u);  // eval_steps defaults to logging_steps
  EXPECT_EQ(rows.back()["eval_tokens"], held * (kSeq - 1));
  EXPECT_NEAR(eval_loss_of(split, corpus_part("held.txt", 0, held * kSeq)), rows.back()["eval_loss"].get<double>(),
              1e-6 * rows.back()["eval_loss"].get<double>());
  // Training on the split reads exactly what training on the rest of the file reads.
  auto r2 = run_command(kBin + train(tail, "--data " + corpus_part("rest.txt", held * kSeq, corpus).string()));
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  std::vector<double> a, b;
  for (auto& row : metrics_of(split))
    if (row.contains("loss")) a.push_back(row["loss"]);
  for (auto& row : metrics_of(tail)) b.push_back(row["loss"]);
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(a[i], b[i], 1e-6 * b[i]) << "step " << i + 1;
}

TEST_F(EvalDuringTraining, BadSettingsAreOneLineAndWriteNothing) {
  const auto out = dir_ / "never";
  const std::string data = "--data " + kSource + "/data/corpus.txt ";
  const auto tiny = corpus_part("tiny.txt", 0, kSeq - 1);
  const std::pair<std::string, std::string> cases[] = {
      {"--eval_strategy steps", "--eval_strategy steps needs --eval_data or --validation_split_percentage"},
      {"--eval_strategy epoch --eval_data " + tiny.string(), "--eval_strategy epoch is not supported"},
      {"--eval_data " + tiny.string() + " --validation_split_percentage 5",
       "give --eval_data or --validation_split_percentage, not both"},
      {"--validation_split_percentage 100", "--validation_split_percentage must be in (0, 100), got 100"},
      {"--validation_split_percentage 0.001", "leaves 0 for eval"},
      {"--eval_data " + tiny.string(), "the eval data holds 31 tokens, fewer than one window of seq_len 32"},
      {"--eval_data " + tiny.string() + " --per_device_eval_batch_size 0", "--per_device_eval_batch_size must be positive"},
  };
  for (auto& [flags, message] : cases) {
    auto r = run_command(kBin + train(out, data + flags));
    EXPECT_NE(r.exit_code, 0) << flags;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << flags << "\n" << r.err;
    EXPECT_FALSE(fs::exists(out)) << flags;
  }
}

// Text through a Hugging Face tokenizer end to end: train a model with --tokenizer_name on a
// .txt (tokenized once into a cached .bin beside it, the same bytes `meshtrain tokenize` writes),
// the saved model directory carries the tokenizer, eval of the text equals eval of the tokens,
// generate prints decoded text, and a tokenizer larger than the model is refused.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "support/run_command.h"

using namespace meshtrain::testing;
namespace fs = std::filesystem;

namespace {

class TextWithTokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("mt_texttok_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "model");
    const std::string corpus = kSource + "/tests/golden/tokenizer_corpus.txt";
    auto r = run_command(kPython + " " + kSource + "/tests/data/make_tokenizers.py " + (dir_ / "tok").string() + " " +
                         corpus + " " + kSource + "/data/corpus.txt");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    // llama-tiny with room for the tokenizer's vocabulary (about 1500 ids).
    auto config = nlohmann::json::parse(slurp(kSource + "/configs/llama-tiny/config.json"));
    config["vocab_size"] = 1536;
    std::ofstream(dir_ / "model/config.json") << config.dump(1);
    config["vocab_size"] = 1000;
    fs::create_directories(dir_ / "small");
    std::ofstream(dir_ / "small/config.json") << config.dump(1);
    // Text beside which the tokens are cached: a copy, not the source tree.
    fs::copy_file(kSource + "/data/corpus.txt", dir_ / "corpus.txt");
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  // A global batch of 4 windows on any number of data-parallel ranks.
  static std::string train(const fs::path& out, const std::string& data, const std::string& extra = "", int ranks = 1) {
    return kBin + " train --config_name " + (dir_ / "model").string() + " --data " + data +
           " --seq_len 32 --per_device_train_batch_size " + std::to_string(4 / ranks) + " --max_steps 3 --logging_steps 1 --save_steps 0"
           " --learning_rate 3e-3 --output_dir " + out.string() + extra;
  }

  static fs::path dir_;
};

fs::path TextWithTokenizer::dir_;

std::vector<double> losses(const fs::path& run) {
  std::vector<double> out;
  for (auto& row : metrics_of(run)) out.push_back(row["loss"]);
  return out;
}

}  // namespace

TEST_F(TextWithTokenizer, TrainEvalAndGenerateReadTextThroughTheModelsTokenizer) {
  const auto tokenizer = dir_ / "tok/llama3";
  const auto run = dir_ / "run";
  auto r = run_command(train(run, (dir_ / "corpus.txt").string(), " --tokenizer_name " + tokenizer.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // The tokens are cached beside the text, exactly as meshtrain tokenize writes them.
  std::vector<fs::path> cached;
  for (auto& e : fs::directory_iterator(dir_))
    if (e.path().filename().string().starts_with("corpus.txt.tok-")) cached.push_back(e.path());
  ASSERT_EQ(cached.size(), 1u);
  EXPECT_EQ(cached[0].extension(), ".bin");
  auto t = run_command(kBin + " tokenize --tokenizer " + tokenizer.string() + " --data " + (dir_ / "corpus.txt").string() +
                       " --output " + (dir_ / "reference.bin").string());
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_EQ(slurp(cached[0]), slurp(dir_ / "reference.bin"));
  // Training on the tokens gives the same curve.
  const auto from_tokens = dir_ / "from_tokens";
  ASSERT_EQ(run_command(train(from_tokens, (dir_ / "reference.bin").string())).exit_code, 0);
  EXPECT_EQ(losses(run), losses(from_tokens));
  ASSERT_EQ(losses(run).size(), 3u);

  // Two ranks on text not yet tokenized: the first encodes it while the other waits.
  fs::copy_file(dir_ / "corpus.txt", dir_ / "fresh.txt");
  const auto fsdp = dir_ / "fsdp";
  auto l = run_command(kBin + " launch -n 2 --" + train(fsdp, (dir_ / "fresh.txt").string(),
                                                         " --tokenizer_name " + tokenizer.string() + " --dp_shard_size 2", 2)
                                                       .substr(kBin.size()));
  ASSERT_EQ(l.exit_code, 0) << l.err;
  ASSERT_EQ(losses(fsdp).size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(losses(fsdp)[i], losses(run)[i], 1e-5 * losses(run)[i]);

  // The saved model carries its tokenizer: eval reads text through it.
  EXPECT_TRUE(fs::exists(run / "tokenizer.json"));
  EXPECT_TRUE(fs::exists(run / "tokenizer_config.json"));
  const std::string eval = kBin + " eval --model_name_or_path " + run.string() + " --seq_len 32 --data ";
  auto e1 = run_command(eval + (dir_ / "corpus.txt").string());
  auto e2 = run_command(eval + (dir_ / "reference.bin").string());
  ASSERT_EQ(e1.exit_code, 0) << e1.err;
  ASSERT_EQ(e2.exit_code, 0) << e2.err;
  EXPECT_EQ(printed_value(e1.out, "eval_loss"), printed_value(e2.out, "eval_loss"));

  // generate encodes the prompt (with BOS) and prints decoded text, BOS left out.
  auto g = run_command(kBin + " generate --model_name_or_path " + run.string() + " --prompt 'The GNU' --max_new_tokens 8");
  ASSERT_EQ(g.exit_code, 0) << g.err;
  EXPECT_TRUE(g.out.starts_with("The GNU")) << g.out;
  EXPECT_EQ(g.out.find("<|begin_of_text|>"), std::string::npos) << g.out;
}

TEST_F(TextWithTokenizer, ATokenizerLargerThanTheModelIsRefused) {
  const auto out = dir_ / "never";
  auto r = run_command(kBin + " train --config_name " + (dir_ / "small").string() + " --data " +
                       (dir_ / "corpus.txt").string() + " --tokenizer_name " + (dir_ / "tok/llama3").string() +
                       " --max_steps 1 --output_dir " + out.string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("ids, more than the model's vocab_size 1000"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(TextWithTokenizer, PackingTrainsOnTheDocumentsTheTokenizerEnded) {
  // The tokenizer ends every paragraph of the corpus with EOS: --packing packs those documents
  // (splitting, and counting, the ones longer than the 32-token window) and trains on them.
  const auto run = dir_ / "packed";
  auto r = run_command(train(run, (dir_ / "corpus.txt").string(),
                             " --tokenizer_name " + (dir_ / "tok/llama3").string() + " --packing"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("packing: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(" documents into "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("documents longer than 32 tokens were split"), std::string::npos) << r.err;
  EXPECT_EQ(losses(run).size(), 3u);

  // Without a tokenizer the byte stream has no EOS, and llama-tiny's config names none.
  const auto never = dir_ / "never_packed";
  auto bytes = run_command(train(never, (dir_ / "corpus.txt").string(), " --packing"));
  EXPECT_EQ(bytes.exit_code, 2) << bytes.err;
  EXPECT_NE(bytes.err.find("--packing needs the EOS id that ends each document"), std::string::npos) << bytes.err;
  auto bad = run_command(train(never, (dir_ / "corpus.txt").string(), " --packing=yes"));
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
  EXPECT_NE(bad.err.find("--packing must be true or false, got 'yes'"), std::string::npos) << bad.err;
  EXPECT_FALSE(fs::exists(never / "metrics.jsonl"));
}

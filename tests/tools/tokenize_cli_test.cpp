// meshtrain tokenize end to end: text and jsonl files through a trained tokenizer.json into
// .bin / .npy files whose ids are Hugging Face tokenizers' own (BOS template, EOS after each
// document), the same on any thread count; bad input gives one line and a non-zero exit.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/token_dataset.h"
#include "support/run_command.h"

using namespace meshtrain::testing;
namespace fs = std::filesystem;

namespace {

class TokenizeCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("mt_tokenize_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    const std::string corpus = kSource + "/tests/golden/tokenizer_corpus.txt";
    const auto r = run_command(kPython + " " + kSource + "/tests/data/make_tokenizers.py " + (dir_ / "tok").string() +
                               " " + corpus + " " + kSource + "/data/corpus.txt " + corpus);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  // Upstream's ids of `docs`: encode(doc) (with the template) then EOS, for each document.
  static std::vector<int64_t> upstream_ids(const std::string& family, const std::vector<std::string>& docs) {
    std::ofstream(dir_ / "docs.json") << nlohmann::json(docs).dump();
    std::ofstream(dir_ / "ids.py") << "import json, sys\nfrom tokenizers import Tokenizer\n"
                                      "t = Tokenizer.from_file(sys.argv[1])\neos = t.token_to_id(sys.argv[3])\n"
                                      "print(json.dumps([i for d in json.load(open(sys.argv[2])) for i in t.encode(d).ids + [eos]]))\n";
    const std::string eos = family.starts_with("llama2") ? "</s>" : "<|end_of_text|>";
    const auto r = run_command(kPython + " " + (dir_ / "ids.py").string() + " " + (dir_ / "tok" / family / "tokenizer.json").string() +
                               " " + (dir_ / "docs.json").string() + " '" + eos + "'");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out).get<std::vector<int64_t>>();
  }

  static std::vector<int64_t> read_tokens(const fs::path& path) {
    auto ds = meshtrain::data::open_token_dataset(path);
    const auto t = ds->slice(0, ds->size());
    return {t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel()};
  }

  static fs::path dir_;
};

fs::path TokenizeCli::dir_;

const std::vector<std::string> kTxtDocs = {"First document, line one.\nLine two: café 東京 👍🏽.",
                                           "Second document after a blank line.", "Third\tdocument  with 12345 digits."};

TEST_F(TokenizeCli, TxtAndJsonlGiveUpstreamIdsWithEos) {
  std::ofstream(dir_ / "a.txt") << "\n" << kTxtDocs[0] << "\n\n" << kTxtDocs[1] << "\n \n\n" << kTxtDocs[2] << "\n";
  const std::vector<std::string> json_docs = {"A jsonl document.", "Another one\nwith a newline."};
  {
    std::ofstream out(dir_ / "b.jsonl");
    for (const auto& d : json_docs) out << nlohmann::json({{"text", d}, {"id", 1}}).dump() << "\n";
  }
  std::vector<std::string> all = kTxtDocs;
  all.insert(all.end(), json_docs.begin(), json_docs.end());
  for (const std::string family : {"llama3", "llama2"}) {
    for (const std::string ext : {".bin", ".npy"}) {
      const fs::path out = dir_ / ("out_" + family + ext);
      const auto r = run_command(kBin + " tokenize --tokenizer " + (dir_ / "tok" / family).string() + " --data " +
                                 (dir_ / "a.txt").string() + " " + (dir_ / "b.jsonl").string() + " --output " + out.string());
      ASSERT_EQ(r.exit_code, 0) << r.err;
      EXPECT_NE(r.out.find("documents: 5\n"), std::string::npos) << r.out;
      EXPECT_NE(r.err.find("tokenize: "), std::string::npos) << r.err;  // the progress line
      const auto expected = upstream_ids(family, all);
      EXPECT_NE(r.out.find("tokens: " + std::to_string(expected.size()) + "\n"), std::string::npos) << r.out;
      EXPECT_EQ(read_tokens(out), expected) << family << ext;
      EXPECT_FALSE(fs::exists(out.string() + ".partial"));
    }
  }
  // uint16 .bin: version 1 header.
  std::ifstream bin(dir_ / "out_llama3.bin", std::ios::binary);
  int32_t header[3];
  bin.read(reinterpret_cast<char*>(header), sizeof(header));
  EXPECT_EQ(header[0], 20240520);
  EXPECT_EQ(header[1], 1);
}

TEST_F(TokenizeCli, OutputDoesNotDependOnThreads) {
  // Several ~1 MB chunks: five copies of the corpus.
  const std::string corpus = slurp(kSource + "/data/corpus.txt");
  {
    std::ofstream out(dir_ / "big.txt");
    for (int i = 0; i < 5; ++i) out << corpus << "\n\n";
  }
  std::vector<std::vector<int64_t>> runs;
  for (int threads : {1, 3}) {
    const fs::path out = dir_ / ("big" + std::to_string(threads) + ".bin");
    const auto r = run_command(kBin + " tokenize --tokenizer " + (dir_ / "tok/llama3").string() + " --data " +
                               (dir_ / "big.txt").string() + " --output " + out.string() + " --threads " + std::to_string(threads));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    runs.push_back(read_tokens(out));
  }
  EXPECT_GT(runs[0].size(), 300000u);  // 1.2 MB of text
  EXPECT_EQ(runs[0], runs[1]);
}

void expect_one_line_error(const std::string& args, int code, const std::string& phrase) {
  const auto r = run_command(kBin + " tokenize " + args);
  EXPECT_EQ(r.exit_code, code) << args << "\n" << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(phrase), std::string::npos) << r.err;
}

TEST_F(TokenizeCli, BadInputIsOneLine) {
  std::ofstream(dir_ / "c.txt") << "some text\n";
  std::ofstream(dir_ / "c.csv") << "a,b\n";
  const std::string tok = " --tokenizer " + (dir_ / "tok/llama3").string();
  const std::string data = " --data " + (dir_ / "c.txt").string();
  expect_one_line_error(tok + data + " --output " + (dir_ / "o.txt").string(), 2, "must end in .bin or .npy");
  expect_one_line_error(tok + " --data " + (dir_ / "c.csv").string() + " --output " + (dir_ / "o.bin").string(), 1,
                        "input extension '.csv' is not supported");
  fs::create_directories(dir_ / "wordpiece");
  std::ofstream(dir_ / "wordpiece/tokenizer.json") << R"({"model": {"type": "WordPiece", "vocab": {"a": 0}}})";
  expect_one_line_error(" --tokenizer " + (dir_ / "wordpiece").string() + data + " --output " + (dir_ / "o.bin").string(), 1,
                        "unsupported model type 'WordPiece'");
  fs::create_directories(dir_ / "huge");
  nlohmann::json j = nlohmann::json::parse(slurp(dir_ / "tok/llama3/tokenizer.json"));
  j["model"]["vocab"]["huge"] = int64_t{1} << 32;
  std::ofstream(dir_ / "huge/tokenizer.json") << j.dump();
  expect_one_line_error(" --tokenizer " + (dir_ / "huge").string() + data + " --output " + (dir_ / "o.bin").string(), 1,
                        "outside [0, 2^31)");
  EXPECT_FALSE(fs::exists(dir_ / "o.bin"));
}

}  // namespace

// tokenizer.json in C++ against Hugging Face tokenizers: small tokenizers of each supported
// family are trained by tests/data/make_tokenizers.py, which also writes upstream's ids and
// decodes for every text of tests/golden/tokenizer_corpus.txt; every one must match exactly.
// Texts that are not valid UTF-8 (no Python reference) must decode back to their bytes.
#include "data/tokenizer.h"

#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "data/utf8.h"
#include "support/run_command.h"
#include "test_files.h"

namespace meshtrain::data {
namespace {

namespace fs = std::filesystem;
using Ids = std::vector<int32_t>;
using Json = nlohmann::json;

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

class HfTokenizers : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("mt_tokenizers_" + std::to_string(::getpid()));
    const std::string corpus = meshtrain::testing::kSource + "/tests/golden/tokenizer_corpus.txt";
    const auto r = meshtrain::testing::run_command(meshtrain::testing::kPython + " " + meshtrain::testing::kSource +
                                                   "/tests/data/make_tokenizers.py " + dir_.string() + " " + corpus +
                                                   " " + meshtrain::testing::kSource + "/data/corpus.txt " + corpus);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static std::vector<Json> reference(const std::string& family) {
    std::ifstream in(dir_ / family / "reference.jsonl");
    std::vector<Json> out;
    for (std::string line; std::getline(in, line);) out.push_back(Json::parse(line));
    return out;
  }

  // Every reference text: ids with and without special tokens, both decodes, the round trip.
  // `prefix`: what the family puts before a text that does not start with a space.
  static void expect_upstream_equal(const std::string& family, const std::string& prefix = "") {
    const Tokenizer tok = Tokenizer::load(dir_ / family);
    const auto items = reference(family);
    ASSERT_GT(items.size(), 40u);
    int checked = 0, round_trips = 0;
    for (const Json& item : items) {
      const std::string text = from_hex(item["hex"]);
      const Ids ids = tok.encode(text, false);
      if (!item["valid"].get<bool>()) {
        EXPECT_EQ(tok.decode_bytes(ids, false), prefix + text) << family << ": bytes do not round-trip: " << item["hex"];
        continue;
      }
      ++checked;
      EXPECT_EQ(ids, item["ids"].get<Ids>()) << family << ": " << text;
      EXPECT_EQ(tok.encode(text, true), item["ids_special"].get<Ids>()) << family << ": " << text;
      const Ids with_special = item["ids_special"].get<Ids>();
      EXPECT_EQ(tok.decode(with_special, false), item["decode"].get<std::string>()) << family << ": " << text;
      EXPECT_EQ(tok.decode(with_special, true), item["decode_skip"].get<std::string>()) << family << ": " << text;
      if (item["round_trip"].get<bool>()) {
        ++round_trips;
        EXPECT_EQ(tok.decode(ids, false), text) << family;
        EXPECT_EQ(tok.decode_bytes(ids, false), text) << family;
      }
    }
    EXPECT_GT(checked, 40);
    EXPECT_GT(round_trips, prefix.empty() ? 20 : 5);  // with a prefix space, only texts that start with one
  }

  static std::string json_of(const std::string& family) {
    return meshtrain::testing::slurp(dir_ / family / "tokenizer.json");
  }

  static fs::path dir_;
};

fs::path HfTokenizers::dir_;

TEST_F(HfTokenizers, Llama3ByteLevelSplitRegexMatchesUpstream) { expect_upstream_equal("llama3"); }
TEST_F(HfTokenizers, Gpt2ByteLevelRegexWithPrefixSpaceMatchesUpstream) { expect_upstream_equal("gpt2", " "); }
TEST_F(HfTokenizers, Qwen2RegexAndNfcMatchUpstream) { expect_upstream_equal("qwen2"); }
TEST_F(HfTokenizers, MetaspaceByteFallbackMatchesUpstream) { expect_upstream_equal("metaspace"); }
TEST_F(HfTokenizers, Llama2NormalizerByteFallbackMatchesUpstream) { expect_upstream_equal("llama2"); }

TEST_F(HfTokenizers, InvalidUtf8DecodesAsUpstreamLossyText) {
  const Tokenizer tok = Tokenizer::load(dir_ / "llama3");
  const std::string text = "a \xff b \xe2\x82 c \xed\xa0\x80";
  EXPECT_EQ(tok.decode_bytes(tok.encode(text, false), false), text);
  // ByteLevel decodes with from_utf8_lossy: one U+FFFD per maximal ill-formed subpart.
  EXPECT_EQ(tok.decode(tok.encode(text, false), false), utf8_lossy(text));
  EXPECT_EQ(utf8_lossy(text), "a \xEF\xBF\xBD b \xEF\xBF\xBD c \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST_F(HfTokenizers, VocabularyAndSpecialIds) {
  const Tokenizer llama3 = Tokenizer::load(dir_ / "llama3" / "tokenizer.json");
  const Json j = Json::parse(json_of("llama3"));
  EXPECT_EQ(llama3.vocab_size(), static_cast<int64_t>(j["model"]["vocab"].size() + 1));  // + <|mask|>
  EXPECT_EQ(llama3.bos_id(), llama3.token_to_id("<|begin_of_text|>"));
  EXPECT_EQ(llama3.eos_id(), llama3.token_to_id("<|end_of_text|>"));
  ASSERT_TRUE(llama3.eos_id().has_value());
  EXPECT_EQ(llama3.id_to_token(*llama3.eos_id()), "<|end_of_text|>");
  EXPECT_EQ(llama3.token_to_id("no such token"), std::nullopt);
  const Tokenizer llama2 = Tokenizer::load(dir_ / "llama2");
  EXPECT_EQ(llama2.bos_id(), 1);
  EXPECT_EQ(llama2.eos_id(), 2);
  EXPECT_EQ(llama2.token_to_id("<0x41>"), 3 + 0x41);
}

TEST_F(HfTokenizers, ThreadsShareOneTokenizer) {
  const Tokenizer tok = Tokenizer::load(dir_ / "llama3");
  const std::string text = meshtrain::testing::slurp(meshtrain::testing::kSource + "/data/corpus.txt").substr(0, 20000);
  const Ids expected = tok.encode(text, true);
  std::vector<Ids> got(4);
  std::vector<std::thread> threads;
  for (auto& g : got) threads.emplace_back([&] { g = tok.encode(text, true); });
  for (auto& t : threads) t.join();
  for (const auto& g : got) EXPECT_EQ(g, expected);
}

// Loading with one component replaced by an unsupported one: one error naming it.
void expect_refused(const std::string& json_text, const std::vector<std::string>& phrases) {
  testing::expect_error([&] { Tokenizer::from_json(json_text, "", "tok/tokenizer.json"); }, phrases);
}

TEST_F(HfTokenizers, RefusesUnsupportedComponents) {
  Json j = Json::parse(json_of("llama3"));
  Json model = j;
  model["model"] = {{"type", "WordPiece"}, {"vocab", {{"a", 0}}}, {"unk_token", "[UNK]"}};
  expect_refused(model.dump(), {"tok/tokenizer.json: ", "unsupported model type 'WordPiece'", "supported: BPE"});
  model["model"]["type"] = "Unigram";
  expect_refused(model.dump(), {"unsupported model type 'Unigram'"});
  Json pre = j;
  pre["pre_tokenizer"] = {{"type", "Whitespace"}};
  expect_refused(pre.dump(), {"tok/tokenizer.json: ", "unsupported pre_tokenizer type 'Whitespace'"});
  pre["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}}}};
  expect_refused(pre.dump(), {"unsupported pre_tokenizer type 'Digits'"});
  Json norm = j;
  norm["normalizer"] = {{"type", "NFKC"}};
  expect_refused(norm.dump(), {"unsupported normalizer type 'NFKC'"});
  Json dec = j;
  dec["decoder"] = {{"type", "WordPiece"}, {"prefix", "##"}};
  expect_refused(dec.dump(), {"unsupported decoder type 'WordPiece'"});
  Json post = j;
  post["post_processor"] = {{"type", "BertProcessing"}};
  expect_refused(post.dump(), {"unsupported post_processor type 'BertProcessing'"});
  Json regex = j;
  regex["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Regex", "(unclosed"}};
  expect_refused(regex.dump(), {"Split pattern '(unclosed' does not compile"});
  Json big = j;
  big["model"]["vocab"]["huge"] = int64_t{1} << 32;
  expect_refused(big.dump(), {"vocab id of 'huge'", "4294967296", "outside [0, 2^31)"});
  expect_refused("{\"model\": ", {"tok/tokenizer.json: invalid tokenizer JSON"});
  testing::expect_error([&] { Tokenizer::load(dir_ / "no-such-dir"); }, {"no such tokenizer file"});
}

}  // namespace
}  // namespace meshtrain::data

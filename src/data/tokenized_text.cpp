#include "data/tokenized_text.h"

#include <algorithm>
#include <cctype>

#include "data/corpus_tokenizer.h"
#include "util/checksum.h"
#include "util/files.h"

namespace meshtrain::data {

namespace fs = std::filesystem;

bool is_text_data(const fs::path& data) {
  std::string ext = data.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".txt" || ext == ".jsonl";
}

fs::path tokenized_path(const fs::path& data, const fs::path& tokenizer_dir) {
  const auto file = fs::is_directory(tokenizer_dir) ? tokenizer_dir / "tokenizer.json" : tokenizer_dir;
  const auto config = file.parent_path() / "tokenizer_config.json";
  std::string key = util::file_checksum(file);
  if (fs::exists(config)) key += util::file_checksum(config);  // it names BOS and EOS
  const std::string digest = util::checksum_of(std::as_bytes(std::span(key.data(), key.size())));
  return data.string() + ".tok-" + digest.substr(digest.find(':') + 1) + ".bin";
}

fs::path tokenize_once(const Tokenizer& tokenizer, const fs::path& data, const fs::path& tokenizer_dir, int threads) {
  auto out = tokenized_path(data, tokenizer_dir);
  if (!fs::exists(out)) tokenize_corpus(tokenizer, {data}, out, threads, [](const CorpusStats&) {});
  return out;
}

}  // namespace meshtrain::data

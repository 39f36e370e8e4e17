// The reading side keeps at most one batch of documents (threads x ~1 MB) in memory; each batch
// is encoded in parallel (thread k takes chunks k, k + threads, ...) and written in order.
#include "data/corpus_tokenizer.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <thread>

#include "data/token_writer.h"
#include "util/check.h"

namespace meshtrain::data {

namespace {

constexpr size_t kChunkBytes = 1 << 20;

bool is_blank(const std::string& line) { return line.find_first_not_of(" \t\r") == std::string::npos; }

// Documents of one .txt or .jsonl file, read line by line.
class DocumentReader {
 public:
  explicit DocumentReader(const std::filesystem::path& path) : path_(path), in_(path, std::ios::binary) {
    const std::string ext = path.extension().string();
    MT_CHECK(ext == ".txt" || ext == ".jsonl", path, ": input extension '", ext,
             "' is not supported (tokenize reads .txt and .jsonl)");
    MT_CHECK(in_, path, ": cannot open the file");
    jsonl_ = ext == ".jsonl";
  }

  // The next document, false at the end of the file; adds the bytes read to `bytes`.
  bool next(std::string& doc, int64_t& bytes) {
    doc.clear();
    bool have = false;
    for (std::string line; std::getline(in_, line);) {
      ++line_no_;
      bytes += static_cast<int64_t>(line.size()) + 1;
      if (jsonl_) {
        if (is_blank(line)) continue;
        doc = text_of(line);
        return true;
      }
      if (is_blank(line)) {
        if (have) return true;
        continue;
      }
      if (have) doc += '\n';
      doc += line;
      have = true;
    }
    return have;
  }

 private:
  std::string text_of(const std::string& line) const {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      fail(path_, " line ", line_no_, ": invalid JSON: ", e.what());
    }
    MT_CHECK(j.is_object(), path_, " line ", line_no_, ": expected a JSON object, got JSON of type ", j.type_name());
    const auto text = j.find("text");
    MT_CHECK(text != j.end(), path_, " line ", line_no_, ": JSON object has no \"text\" field");
    MT_CHECK(text->is_string(), path_, " line ", line_no_, ": \"text\" field is a ", text->type_name(), ", not a string");
    return text->get<std::string>();
  }

  std::filesystem::path path_;
  std::ifstream in_;
  bool jsonl_ = false;
  int64_t line_no_ = 0;
};

void encode_chunk(const Tokenizer& tok, const std::vector<std::string>& docs, std::vector<int32_t>& out) {
  const auto eos = tok.eos_id();
  out.clear();
  for (const std::string& doc : docs) {
    tok.encode_into(doc, true, out);
    if (eos) out.push_back(*eos);
  }
}

}  // namespace

CorpusStats tokenize_corpus(const Tokenizer& tokenizer, const std::vector<std::filesystem::path>& inputs,
                            const std::filesystem::path& output, int threads,
                            const std::function<void(const CorpusStats&)>& progress) {
  MT_CHECK(!inputs.empty(), "tokenize: no input files");
  TokenWriter writer(output, tokenizer.vocab_size());
  std::vector<std::unique_ptr<DocumentReader>> readers;
  for (const auto& p : inputs) readers.push_back(std::make_unique<DocumentReader>(p));  // checks them all first
  threads = std::max(1, threads);
  CorpusStats stats;
  size_t current = 0;
  std::vector<std::vector<std::string>> chunks(static_cast<size_t>(threads) * 2);
  std::vector<std::vector<int32_t>> ids(chunks.size());
  std::string doc;
  while (current < readers.size()) {
    size_t filled = 0;
    for (; filled < chunks.size() && current < readers.size(); ++filled) {
      auto& chunk = chunks[filled];
      chunk.clear();
      size_t bytes = 0;
      while (bytes < kChunkBytes && current < readers.size()) {
        if (!readers[current]->next(doc, stats.bytes)) {
          ++current;
          continue;
        }
        bytes += doc.size();
        chunk.push_back(std::move(doc));
      }
    }
    std::vector<std::thread> pool;
    std::exception_ptr error;
    for (int k = 0; k < threads; ++k) {
      pool.emplace_back([&, k] {
        try {
          for (size_t c = k; c < filled; c += threads) encode_chunk(tokenizer, chunks[c], ids[c]);
        } catch (...) {
          error = std::current_exception();
        }
      });
    }
    for (auto& t : pool) t.join();
    if (error) std::rethrow_exception(error);
    for (size_t c = 0; c < filled; ++c) {
      writer.write(ids[c]);
      stats.documents += static_cast<int64_t>(chunks[c].size());
      stats.tokens += static_cast<int64_t>(ids[c].size());
    }
    if (progress) progress(stats);
  }
  MT_CHECK(stats.tokens > 0, "tokenize: the inputs hold no text (0 documents)");
  writer.finish();
  return stats;
}

}  // namespace meshtrain::data

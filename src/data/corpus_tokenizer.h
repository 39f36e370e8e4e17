// Tokenizes text files into one token file, streaming: documents are read in chunks of about a
// megabyte, encoded on several threads, and written in input order, so the output does not
// depend on the thread count. A document is a run of non-blank lines of a .txt file (blank lines
// separate documents) or the "text" field of a .jsonl line; EOS follows each document when the
// tokenizer has one, and the tokenizer's template adds BOS.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <vector>

#include "data/tokenizer.h"

namespace meshtrain::data {

struct CorpusStats {
  int64_t bytes = 0;      // input bytes read
  int64_t documents = 0;
  int64_t tokens = 0;
};

// Writes `output` (.bin or .npy, see token_writer.h); `progress` is called after each batch.
CorpusStats tokenize_corpus(const Tokenizer& tokenizer, const std::vector<std::filesystem::path>& inputs,
                            const std::filesystem::path& output, int threads,
                            const std::function<void(const CorpusStats&)>& progress);

}  // namespace meshtrain::data

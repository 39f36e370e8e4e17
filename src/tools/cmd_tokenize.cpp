// meshtrain tokenize: text files (.txt, .jsonl) through a Hugging Face tokenizer.json into one
// token file (.bin or .npy) that train and eval read, on several threads, in input order.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <thread>

#include "data/corpus_tokenizer.h"
#include "tools/commands.h"
#include "tools/flags.h"
#include "util/check.h"

namespace meshtrain::tools {

int run_tokenize(const Args& argv) {
  Flags flags("tokenize", {{"tokenizer", "directory with tokenizer.json, or the file (required)"},
                           {"data", "input files: .txt (blank lines separate documents) or .jsonl (\"text\"); "
                                    "more may follow (required)"},
                           {"output", "token file: .bin (llm.c) or .npy (required)"},
                           {"threads", "encoding threads (default: the cores)"}},
              argv);
  if (flags.help_requested()) {
    std::cout << flags.usage("--tokenizer DIR --data FILE [FILE...] --output OUT.bin");
    return 0;
  }
  std::vector<std::filesystem::path> inputs{resolve_path(flags.require("data"))};
  for (const auto& p : flags.positional()) inputs.push_back(resolve_path(p));
  const std::filesystem::path output = flags.require("output");
  const std::string ext = output.extension().string();
  if (ext != ".bin" && ext != ".npy")
    throw UsageError("meshtrain tokenize: --output " + output.string() + " must end in .bin or .npy");
  const int64_t threads = flags.get_int("threads", std::max(1u, std::thread::hardware_concurrency()));
  if (threads < 1) throw UsageError("meshtrain tokenize: --threads must be positive");

  const auto tokenizer = data::Tokenizer::load(resolve_path(flags.require("tokenizer")));
  const auto start = std::chrono::steady_clock::now();
  const auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  const auto stats = data::tokenize_corpus(tokenizer, inputs, output, static_cast<int>(threads),
                                           [&](const data::CorpusStats& s) {
                                             std::fprintf(stderr, "tokenize: %.1f MB, %lld documents, %lld tokens, %.2f MB/s\n",
                                                          s.bytes / 1e6, static_cast<long long>(s.documents),
                                                          static_cast<long long>(s.tokens), s.bytes / 1e6 / seconds());
                                           });
  std::printf("documents: %lld\ntokens: %lld\nvocab_size: %lld\noutput: %s\n", static_cast<long long>(stats.documents),
              static_cast<long long>(stats.tokens), static_cast<long long>(tokenizer.vocab_size()), output.c_str());
  return 0;
}

}  // namespace meshtrain::tools

// Text data (.txt, .jsonl) read through a Hugging Face tokenizer: tokenized once into a .bin
// beside the data, named by the tokenizer's files (DATA.tok-<checksum>.bin), so later runs, and
// the other ranks, read the tokens without encoding again and a changed tokenizer encodes anew.
#pragma once
#include <filesystem>

#include "data/tokenizer.h"

namespace meshtrain::data {

// Whether `data` is text that a tokenizer encodes (.txt, .jsonl); token files are read as they are.
bool is_text_data(const std::filesystem::path& data);

// Where the tokens of `data` through the tokenizer at `tokenizer_dir` (a directory holding
// tokenizer.json, or the file) are cached.
std::filesystem::path tokenized_path(const std::filesystem::path& data, const std::filesystem::path& tokenizer_dir);

// Writes tokenized_path(data, tokenizer_dir) unless it exists (documents as `meshtrain tokenize`
// cuts them, EOS after each) and returns it.
std::filesystem::path tokenize_once(const Tokenizer& tokenizer, const std::filesystem::path& data,
                                    const std::filesystem::path& tokenizer_dir, int threads);

}  // namespace meshtrain::data

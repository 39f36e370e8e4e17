// The data a command reads: token files as they are, and text (.txt, .jsonl) through the model's
// Hugging Face tokenizer (--tokenizer_name, else tokenizer.json in --model_name_or_path) when
// there is one, else through the byte tokenizer.
#pragma once
#include <filesystem>
#include <memory>
#include <optional>

#include "data/token_dataset.h"
#include "dist/runtime.h"
#include "tools/flags.h"

namespace meshtrain::tools {

// The tokenizer directory (or tokenizer.json) the flags name, if any.
std::optional<std::filesystem::path> tokenizer_from(const Flags& flags);

// Opens `data`; text goes through the tokenizer, encoded once into a file beside it by the first
// rank of each host while the others wait (docs/files.md). A tokenizer with more ids than the
// model's vocab_size is an error.
std::unique_ptr<data::TokenDataset> open_data(const std::filesystem::path& data,
                                              const std::optional<std::filesystem::path>& tokenizer,
                                              const dist::Runtime& runtime, int64_t vocab_size);

// Copies the tokenizer's files (tokenizer.json, tokenizer_config.json, special_tokens_map.json)
// into a saved model directory, so that it loads with its tokenizer as save_pretrained's does.
void save_tokenizer(const std::filesystem::path& tokenizer, const std::filesystem::path& model_dir);

}  // namespace meshtrain::tools

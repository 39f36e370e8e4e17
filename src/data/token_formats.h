// One opener per on-disk token format; open_token_dataset() picks among them by extension.
// Each returns a non-empty dataset or throws an Error naming the path and the offending value.
#pragma once
#include <filesystem>
#include <memory>

#include "data/token_dataset.h"

namespace meshtrain::data {

std::unique_ptr<TokenDataset> open_npy_dataset(const std::filesystem::path& path);
std::unique_ptr<TokenDataset> open_llmc_bin_dataset(const std::filesystem::path& path);
std::unique_ptr<TokenDataset> open_text_dataset(const std::filesystem::path& path);
std::unique_ptr<TokenDataset> open_jsonl_dataset(const std::filesystem::path& path);

}  // namespace meshtrain::data

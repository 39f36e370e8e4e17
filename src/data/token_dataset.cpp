// TokenDataset's shared pieces (bounds-checked slice, cached max_token) and the choice of
// format by file extension.
#include "data/token_dataset.h"

#include <algorithm>
#include <cctype>
#include <limits>
#include <string>
#include <vector>

#include "data/token_formats.h"
#include "util/check.h"

namespace meshtrain::data {

at::Tensor TokenDataset::slice(int64_t start, int64_t length) const {
  MT_CHECK(start >= 0 && length >= 0 && start <= size() && length <= size() - start,
           "token slice [", start, ", ", start + length, ") is outside the dataset's ", size(),
           " tokens");
  at::Tensor out = at::empty({length}, at::kLong);
  if (length > 0) read_into(start, length, out.data_ptr<int64_t>());
  return out;
}

int64_t TokenDataset::max_token() const {
  if (!max_token_known_) {
    constexpr int64_t kChunk = int64_t{1} << 20;
    std::vector<int64_t> buf(static_cast<size_t>(std::min(kChunk, size())));
    int64_t best = std::numeric_limits<int64_t>::min();
    for (int64_t start = 0; start < size(); start += kChunk) {
      const int64_t n = std::min(kChunk, size() - start);
      read_into(start, n, buf.data());
      best = std::max(best, *std::max_element(buf.begin(), buf.begin() + n));
    }
    max_token_ = best;
    max_token_known_ = true;
  }
  return max_token_;
}

std::unique_ptr<TokenDataset> open_token_dataset(const std::filesystem::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (ext == ".npy") return open_npy_dataset(path);
  if (ext == ".bin") return open_llmc_bin_dataset(path);
  if (ext == ".txt") return open_text_dataset(path);
  if (ext == ".jsonl") return open_jsonl_dataset(path);
  fail("unsupported token dataset extension '", ext, "' for ", path,
       " (supported: .npy, .bin, .txt, .jsonl)");
}

}  // namespace meshtrain::data

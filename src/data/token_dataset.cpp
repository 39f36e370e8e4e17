// TokenDataset's shared pieces (bounds-checked slice, cached id range) and the choice of
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

void TokenDataset::scan() const {
  if (scanned_) return;
  constexpr int64_t kChunk = int64_t{1} << 20;
  std::vector<int64_t> buf(static_cast<size_t>(std::min(kChunk, size())));
  int64_t lo = std::numeric_limits<int64_t>::max(), hi = std::numeric_limits<int64_t>::min();
  for (int64_t start = 0; start < size(); start += kChunk) {
    const int64_t n = std::min(kChunk, size() - start);
    read_into(start, n, buf.data());
    auto [a, b] = std::minmax_element(buf.begin(), buf.begin() + n);
    lo = std::min(lo, *a);
    hi = std::max(hi, *b);
  }
  min_token_ = lo;
  max_token_ = hi;
  scanned_ = true;
}

int64_t TokenDataset::min_token() const {
  scan();
  return min_token_;
}

int64_t TokenDataset::max_token() const {
  scan();
  return max_token_;
}

void TokenDataset::check_ids(int64_t vocab_size) const {
  MT_CHECK(min_token() >= 0, "the data holds the negative token id ", min_token());
  MT_CHECK(max_token() < vocab_size, "the data holds token id ", max_token(), " but the model's vocab_size is ",
           vocab_size);
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

#include "data/validation_split.h"

#include <cmath>

#include "data/eval_windows.h"
#include "util/check.h"

namespace meshtrain::data {

namespace {

// Tokens [start, start + length) of another dataset.
class TokenRange : public TokenDataset {
 public:
  TokenRange(const TokenDataset& whole, int64_t start, int64_t length) : whole_(whole), start_(start), length_(length) {}
  int64_t size() const override { return length_; }
  void read_into(int64_t start, int64_t length, int64_t* out) const override {
    whole_.read_into(start_ + start, length, out);
  }

 private:
  const TokenDataset& whole_;
  int64_t start_, length_;
};

}  // namespace

ValidationSplit split_validation(const TokenDataset& dataset, int64_t seq_len, double percentage) {
  if (!(percentage > 0 && percentage < 100))
    throw UsageError(str_cat("--validation_split_percentage must be in (0, 100), got ", percentage));
  const int64_t windows = num_consecutive_windows(dataset, seq_len);
  const auto held = static_cast<int64_t>(std::floor(static_cast<double>(windows) * percentage / 100.0));
  MT_CHECK(held >= 1 && held < windows, "--validation_split_percentage ", percentage, " of ", windows,
           " windows of ", seq_len, " tokens leaves ", held, " for eval and ", windows - held,
           " for training; each needs at least one");
  const int64_t cut = held * seq_len;
  return {std::make_unique<TokenRange>(dataset, cut, dataset.size() - cut),
          std::make_unique<TokenRange>(dataset, 0, cut)};
}

}  // namespace meshtrain::data

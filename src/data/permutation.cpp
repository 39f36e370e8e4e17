// splitmix64 and the Fisher-Yates shuffle built on it; see permutation.h.
#include "data/permutation.h"

#include <numeric>

#include "util/check.h"

namespace meshtrain::data {

uint64_t SplitMix64::next() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t SplitMix64::below(uint64_t bound) {
  // Reject the top partial block of 2^64 so every residue is equally likely.
  const uint64_t limit = ~uint64_t{0} - (~uint64_t{0} % bound);
  uint64_t r;
  do {
    r = next();
  } while (r >= limit);
  return r % bound;
}

std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed, uint64_t stream) {
  MT_CHECK(n >= 0, "permutation size must be >= 0, got ", n);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  // Mix the stream through one splitmix step so nearby (seed, stream) pairs start far apart.
  SplitMix64 key(stream ^ 0x6a09e667f3bcc909ULL);
  SplitMix64 rng(seed ^ key.next());
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

}  // namespace meshtrain::data

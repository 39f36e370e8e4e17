// Seeded permutations that depend on nothing but their arguments (no torch or std generator):
// splitmix64 keyed by (seed, stream) drives a Fisher-Yates shuffle, so the same inputs give the
// same order on every machine, compiler and library version.
#pragma once
#include <cstdint>
#include <vector>

namespace meshtrain::data {

// The splitmix64 generator (Steele, Lea, Flood 2014): a 64-bit state advanced by a constant.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t state) : state_(state) {}
  uint64_t next();
  // Uniform in [0, bound), bound > 0, without modulo bias.
  uint64_t below(uint64_t bound);

 private:
  uint64_t state_;
};

// A permutation of [0, n), determined only by (n, seed, stream).
std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed, uint64_t stream);

}  // namespace meshtrain::data

// WindowSampler and consecutive_windows: epochs are permutations keyed only by (seed, epoch),
// stream positions are pure functions of k, and batches hold the right token ranges.
#include "data/window_sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "data/eval_windows.h"
#include "data/permutation.h"
#include "test_files.h"

namespace meshtrain::data {
namespace {

using testing::expect_error;
using testing::to_vector;
using Ints = std::vector<int64_t>;

// Token i has id 1000 + i, so a window's contents reveal where it came from.
class CountingDataset : public TokenDataset {
 public:
  explicit CountingDataset(int64_t n) : n_(n) {}
  int64_t size() const override { return n_; }
  void read_into(int64_t start, int64_t length, int64_t* out) const override {
    for (int64_t i = 0; i < length; ++i) out[i] = 1000 + start + i;
  }

 private:
  int64_t n_;
};

Ints epoch_of(const WindowSampler& s, int64_t epoch) {
  Ints out;
  for (int64_t i = 0; i < s.num_windows(); ++i) {
    out.push_back(s.window_at(epoch * s.num_windows() + i));
  }
  return out;
}

TEST(WindowSampler, EachEpochIsAPermutationAndEpochsDiffer) {
  CountingDataset ds(103);  // 10 windows of 10, 3 tokens left over
  WindowSampler s(ds, 10, 42);
  ASSERT_EQ(s.num_windows(), 10);
  Ints identity(10);
  std::iota(identity.begin(), identity.end(), 0);
  std::set<Ints> orders;
  for (int64_t e = 0; e < 6; ++e) {
    Ints order = epoch_of(s, e);
    orders.insert(order);
    std::sort(order.begin(), order.end());
    EXPECT_EQ(order, identity) << "epoch " << e;
  }
  EXPECT_GT(orders.size(), 4u);  // fresh order per epoch
}

TEST(WindowSampler, SameSeedSameStreamDifferentSeedDifferentOrder) {
  CountingDataset ds(64 * 8);
  WindowSampler a(ds, 8, 7), b(ds, 8, 7), c(ds, 8, 8);
  Ints sa, sb, sc;
  for (int64_t k = 0; k < 3 * 64; ++k) {
    sa.push_back(a.window_at(k));
    sb.push_back(b.window_at(k));
    sc.push_back(c.window_at(k));
  }
  EXPECT_EQ(sa, sb);
  EXPECT_NE(sa, sc);
  EXPECT_NE(Ints(sa.begin(), sa.begin() + 64), Ints(sc.begin(), sc.begin() + 64));
}

TEST(WindowSampler, WindowAtIsAPureFunctionOfK) {
  CountingDataset ds(50 * 4);
  WindowSampler forward(ds, 4, 123), scattered(ds, 4, 123);
  Ints ks(400);
  std::iota(ks.begin(), ks.end(), 0);
  Ints expected;
  for (int64_t k : ks) expected.push_back(forward.window_at(k));
  // Query the second sampler in a different order, jumping across epochs back and forth.
  Ints shuffled = seeded_permutation(static_cast<int64_t>(ks.size()), 99, 0);
  Ints got(ks.size());
  for (int64_t k : shuffled) got[static_cast<size_t>(k)] = scattered.window_at(k);
  EXPECT_EQ(got, expected);
  // A fresh sampler asked only for a late position agrees (resume from a saved k).
  WindowSampler resumed(ds, 4, 123);
  EXPECT_EQ(resumed.window_at(377), expected[377]);
}

TEST(WindowSampler, BatchHoldsTheWindowsTokens) {
  CountingDataset ds(7 * 5 + 2);
  WindowSampler s(ds, 5, 3);
  const at::Tensor b = s.batch(4, 6);  // crosses from epoch 0 into epoch 1
  ASSERT_EQ(b.sizes(), (at::IntArrayRef{6, 5}));
  EXPECT_EQ(b.scalar_type(), at::kLong);
  for (int64_t r = 0; r < 6; ++r) {
    const int64_t w = s.window_at(4 + r);
    Ints want(5);
    std::iota(want.begin(), want.end(), 1000 + w * 5);
    EXPECT_EQ(to_vector(b[r]), want) << "row " << r;
  }
  EXPECT_EQ(s.batch(10, 0).sizes(), (at::IntArrayRef{0, 5}));
}

TEST(WindowSampler, BatchFromAFileDataset) {
  testing::TempDir dir;
  Ints values(24);
  std::iota(values.begin(), values.end(), 100);
  auto ds = open_token_dataset(
      testing::write_bytes(dir / "t.npy", testing::npy_of("<u2", values)));
  WindowSampler s(*ds, 6, 0);
  const at::Tensor b = s.batch(0, 4);
  for (int64_t r = 0; r < 4; ++r) {
    const int64_t w = s.window_at(r);
    EXPECT_EQ(to_vector(b[r]), Ints(values.begin() + w * 6, values.begin() + (w + 1) * 6));
  }
}

TEST(WindowSampler, RejectsTooShortDatasetAndBadArguments) {
  CountingDataset ds(15);
  expect_error([&] { WindowSampler(ds, 16, 0); }, {"15 tokens", "seq_len 16"});
  expect_error([&] { WindowSampler(ds, 1, 0); }, {"seq_len must be >= 2", "got 1"});
  WindowSampler s(ds, 5, 0);
  expect_error([&] { s.window_at(-1); }, {"-1"});
  expect_error([&] { s.batch(0, -2); }, {"count=-2"});
}

TEST(Permutation, DeterministicUnbiasedEnoughAndCoversSmallSizes) {
  EXPECT_TRUE(seeded_permutation(0, 1, 1).empty());
  EXPECT_EQ(seeded_permutation(1, 1, 1), Ints{0});
  EXPECT_EQ(seeded_permutation(1000, 5, 2), seeded_permutation(1000, 5, 2));
  EXPECT_NE(seeded_permutation(1000, 5, 2), seeded_permutation(1000, 5, 3));
  // Each of the 6 orders of 3 elements shows up over many streams.
  std::set<Ints> seen;
  for (uint64_t stream = 0; stream < 200; ++stream) seen.insert(seeded_permutation(3, 11, stream));
  EXPECT_EQ(seen.size(), 6u);
  // Known first outputs of splitmix64 seeded with 0 (reference implementation values).
  SplitMix64 g(0);
  EXPECT_EQ(g.next(), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(g.next(), 0x6e789e6aa1b965f4ULL);
}

TEST(ConsecutiveWindows, FileOrderAndBounds) {
  CountingDataset ds(23);
  EXPECT_EQ(num_consecutive_windows(ds, 5), 4);
  const at::Tensor w = consecutive_windows(ds, 5, 1, 3);
  ASSERT_EQ(w.sizes(), (at::IntArrayRef{3, 5}));
  Ints want(15);
  std::iota(want.begin(), want.end(), 1005);
  EXPECT_EQ(to_vector(w), want);
  expect_error([&] { consecutive_windows(ds, 5, 2, 3); }, {"[2, 5)", "4 windows"});
  expect_error([&] { consecutive_windows(ds, 1, 0, 1); }, {"seq_len must be >= 2"});
}

}  // namespace
}  // namespace meshtrain::data

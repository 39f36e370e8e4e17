// PackedDocuments: documents found at EOS, best-fit decreasing into windows, long documents
// split and counted, positions restarting per document, targets that never cross a boundary,
// padding without targets; and the sampler's packed stream.
#include "data/document_packing.h"

#include <gtest/gtest.h>

#include <map>

#include "data/window_sampler.h"
#include "test_files.h"

namespace meshtrain::data {
namespace {

using testing::expect_error;
using Ints = std::vector<int64_t>;
constexpr int64_t kEos = 0;

class VectorDataset : public TokenDataset {
 public:
  explicit VectorDataset(Ints tokens) : tokens_(std::move(tokens)) {}
  int64_t size() const override { return static_cast<int64_t>(tokens_.size()); }
  void read_into(int64_t start, int64_t length, int64_t* out) const override {
    std::copy_n(tokens_.begin() + start, length, out);
  }

 private:
  Ints tokens_;
};

// Documents of the given lengths (EOS included), document d's tokens all 10 + d, then EOS.
Ints documents(const Ints& lengths) {
  Ints out;
  for (size_t d = 0; d < lengths.size(); ++d) {
    out.insert(out.end(), lengths[d] - 1, 10 + static_cast<int64_t>(d));
    out.push_back(kEos);
  }
  return out;
}

struct Window {
  Ints ids, positions, targets;
};
Window window(const PackedDocuments& p, int64_t w) {
  Window out{Ints(p.seq_len()), Ints(p.seq_len()), Ints(p.seq_len())};
  p.read(w, out.ids.data(), out.positions.data(), out.targets.data());
  return out;
}

}  // namespace

TEST(DocumentPacking, BestFitDecreasingWithRestartingPositionsAndTargets) {
  // Lengths 3, 6, 2, 5, 4 into windows of 8: 6 -> w0, 5 -> w1, 4 -> w2, 3 -> w1 (full), 2 -> w0.
  VectorDataset data(documents({3, 6, 2, 5, 4}));
  PackedDocuments p(data, 8, kEos);
  EXPECT_EQ(p.documents(), 5);
  EXPECT_EQ(p.split_documents(), 0);
  EXPECT_EQ(p.tokens(), 20);
  ASSERT_EQ(p.num_windows(), 3);
  auto w0 = window(p, 0);
  EXPECT_EQ(w0.ids, (Ints{11, 11, 11, 11, 11, 0, 12, 0}));
  EXPECT_EQ(w0.positions, (Ints{0, 1, 2, 3, 4, 5, 0, 1}));
  EXPECT_EQ(w0.targets, (Ints{11, 11, 11, 11, 0, -100, 0, -100}));
  auto w1 = window(p, 1);
  EXPECT_EQ(w1.ids, (Ints{13, 13, 13, 13, 0, 10, 10, 0}));
  EXPECT_EQ(w1.positions, (Ints{0, 1, 2, 3, 4, 0, 1, 2}));
  EXPECT_EQ(w1.targets, (Ints{13, 13, 13, 0, -100, 10, 0, -100}));
  auto w2 = window(p, 2);  // 4 tokens, then padding: EOS ids, its own positions, no targets
  EXPECT_EQ(w2.ids, (Ints{14, 14, 14, 0, 0, 0, 0, 0}));
  EXPECT_EQ(w2.positions, (Ints{0, 1, 2, 3, 0, 1, 2, 3}));
  EXPECT_EQ(w2.targets, (Ints{14, 14, 0, -100, -100, -100, -100, -100}));
}

TEST(DocumentPacking, LongDocumentsAreSplitAndCountedAndTheLastMayLackEos) {
  Ints tokens = documents({20, 3});
  tokens.insert(tokens.end(), {7, 7});  // a final document without EOS
  VectorDataset data(tokens);
  PackedDocuments p(data, 8, kEos);
  EXPECT_EQ(p.documents(), 3);
  EXPECT_EQ(p.split_documents(), 1);  // 20 -> 8 + 8 + 4
  EXPECT_EQ(p.tokens(), 25);
  // Pieces 8, 8, 4, 3, 2: 8 -> w0, 8 -> w1, 4 -> w2, 3 -> w2, 2 -> ... w2 has 1 left: w3.
  ASSERT_EQ(p.num_windows(), 4);
  EXPECT_EQ(window(p, 0).positions, (Ints{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(window(p, 0).targets.back(), -100);  // a piece does not predict the next piece
  EXPECT_EQ(window(p, 3).ids, (Ints{7, 7, 0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(window(p, 3).targets, (Ints{7, -100, -100, -100, -100, -100, -100, -100}));
}

TEST(DocumentPacking, EveryTokenLandsOnceAndTheSamplerReadsPackedRows) {
  Ints lengths;
  for (int i = 0; i < 200; ++i) lengths.push_back(1 + (i * 37) % 50);
  VectorDataset data(documents(lengths));
  PackedDocuments p(data, 64, kEos);
  std::map<int64_t, int64_t> seen;  // token id -> count
  int64_t data_tokens = 0;
  for (int64_t w = 0; w < p.num_windows(); ++w) {
    auto win = window(p, w);
    for (int64_t t = 0; t < 64; ++t)
      if (win.ids[t] != kEos) ++seen[win.ids[t]];
    for (int64_t t = 0; t + 1 < 64; ++t)  // a target is the next token of the same document
      if (win.targets[t] != -100) {
        EXPECT_EQ(win.targets[t], win.ids[t + 1]);
        EXPECT_EQ(win.positions[t + 1], win.positions[t] + 1);
      }
  }
  for (size_t d = 0; d < lengths.size(); ++d) {
    EXPECT_EQ(seen[10 + static_cast<int64_t>(d)], lengths[d] - 1) << "document " << d;
    data_tokens += lengths[d];
  }
  EXPECT_EQ(p.tokens(), data_tokens);
  EXPECT_GT(static_cast<double>(data_tokens) / static_cast<double>(64 * p.num_windows()), 0.9);

  WindowSampler sampler(p, 3);
  EXPECT_TRUE(sampler.packed());
  auto rows = sampler.packed_batch(5, 2);
  for (int64_t r = 0; r < 2; ++r) {
    auto win = window(p, sampler.window_at(5 + r));
    EXPECT_EQ(Ints(rows.input_ids[r].data_ptr<int64_t>(), rows.input_ids[r].data_ptr<int64_t>() + 64), win.ids);
    EXPECT_EQ(Ints(rows.position_ids[r].data_ptr<int64_t>(), rows.position_ids[r].data_ptr<int64_t>() + 64),
              win.positions);
    EXPECT_EQ(Ints(rows.targets[r].data_ptr<int64_t>(), rows.targets[r].data_ptr<int64_t>() + 64), win.targets);
  }
  expect_error([&] { sampler.batch(0, 1); }, {"packed windows"});
}

}  // namespace meshtrain::data

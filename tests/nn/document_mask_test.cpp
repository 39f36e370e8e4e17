// Packed documents: HF's document ids from restarting position_ids, document-causal attention
// of whole rows against each document attended on its own (outputs, lse, gradients), and the
// blocks it computes, which skip pairs of documents that never meet.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nn/document_mask.h"
#include "support/attention_reference.h"

using namespace meshtrain;
using namespace meshtrain::testing;

TEST(PackedDocumentIds, RestartingPositionsStartDocumentsAsHuggingFaceFindsThem) {
  auto pos = at::tensor({0, 1, 2, 0, 1, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5}, at::kLong).view({2, 8});
  auto ids = nn::packed_document_ids(pos);
  ASSERT_TRUE(ids.defined());
  // A row that starts anywhere is one document until its positions stop counting up by one.
  EXPECT_TRUE(at::equal(ids, at::tensor({0, 0, 0, 1, 1, 2, 2, 2, 0, 0, 1, 1, 1, 1, 1, 1}, at::kLong).view({2, 8})));
  // Every row one document (offset positions of a sequence shard included): not packed.
  EXPECT_FALSE(nn::packed_document_ids(at::arange(40, 48, at::kLong).view({1, 8})).defined());
  EXPECT_FALSE(nn::packed_document_ids(at::arange(16, at::kLong).view({2, 8}) % 8).defined());
}

TEST(DocumentAttention, EqualsEachDocumentOnItsOwnOutputsAndGradients) {
  // Row 0: a document longer than a group (300 > 256), then short ones grouped under a mask;
  // row 1: many tiny documents and a single-token one; row 2: one document (plain causal).
  auto docs = documents_of_lengths({{300, 5, 7, 1, 40, 200, 47},
                                    {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                     23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 39},
                                    {600}});
  for (auto [H, Hkv, d] : {std::tuple<int64_t, int64_t, int64_t>{4, 2, 12}, {3, 3, 8}}) {
    SCOPED_TRACE(::testing::Message() << "H " << H << " Hkv " << Hkv << " d " << d);
    auto ref = serial_document_attention(3, H, Hkv, 600, d, 11, docs);
    auto q = ref.q.clone().requires_grad_(), k = ref.k.clone().requires_grad_(), v = ref.v.clone().requires_grad_();
    auto res = nn::LocalCausalAttention().forward(q, k, v, ref.scale, docs);
    expect_close(res.out.detach(), ref.out, "out");
    expect_close(res.lse, ref.lse, "lse");
    (res.out * ref.w).sum().backward();
    expect_close(q.grad(), ref.dq, "dq");
    expect_close(k.grad(), ref.dk, "dk");
    expect_close(v.grad(), ref.dv, "dv");
  }
}

TEST(DocumentAttention, BlocksSkipDocumentsThatNeverMeet) {
  // 64 documents of 16 tokens: the diagonal is 4 masked groups of 256, not one causal 1024 × 1024.
  auto docs = documents_of_lengths({std::vector<int64_t>(64, 16)});
  std::vector<nn::AttentionBlock> blocks;
  nn::add_document_blocks(docs, {0, 0, 1024}, {0, 0, 1024}, blocks);
  ASSERT_EQ(blocks.size(), 4u);
  for (auto& b : blocks) {
    EXPECT_EQ(b.q_len, 256);
    EXPECT_EQ(b.k_begin, b.q_begin);
    ASSERT_TRUE(b.mask.defined());
    EXPECT_EQ(b.mask.isfinite().sum().item<int64_t>(), 16 * (16 * 17 / 2));  // 16 causal triangles
  }
  // One long document: one causal block, no mask.
  blocks.clear();
  nn::add_document_blocks(documents_of_lengths({{1024}}), {0, 0, 1024}, {0, 0, 1024}, blocks);
  ASSERT_EQ(blocks.size(), 1u);
  EXPECT_TRUE(blocks[0].causal);
  EXPECT_FALSE(blocks[0].mask.defined());
  // Keys before queries: only the document spanning both, every query of it against every key.
  // Documents 0..99, 100..139 (spans the cut at 128), 140..255.
  auto three = documents_of_lengths({{100, 40, 116}});
  blocks.clear();
  nn::add_document_blocks(three, {128, 0, 128}, {0, 5, 128}, blocks);
  ASSERT_EQ(blocks.size(), 1u);
  EXPECT_EQ(blocks[0].q_begin, 0);
  EXPECT_EQ(blocks[0].q_len, 12);      // 128..139
  EXPECT_EQ(blocks[0].k_begin, 5 + 100);  // keys 100..127, at local row 5 + 100
  EXPECT_EQ(blocks[0].k_len, 28);
  EXPECT_FALSE(blocks[0].causal);
  // No document spans the cut, or keys after queries: nothing.
  blocks.clear();
  nn::add_document_blocks(documents_of_lengths({{128, 128}}), {128, 0, 128}, {0, 0, 128}, blocks);
  nn::add_document_blocks(three, {0, 0, 128}, {128, 0, 128}, blocks);
  EXPECT_TRUE(blocks.empty());
}

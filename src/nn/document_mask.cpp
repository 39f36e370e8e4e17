#include "nn/document_mask.h"

#include <limits>

#include "util/check.h"

namespace meshtrain::nn {

namespace {

// Documents shorter than this share one masked block on the diagonal: a call per tiny document
// would cost more than the masked entries it saves.
constexpr int64_t kGroupTokens = 256;

// [n, n] additive mask of document-causal attention among the tokens with documents `docs`.
at::Tensor block_diagonal_causal_mask(const int64_t* docs, int64_t n) {
  auto d = at::from_blob(const_cast<int64_t*>(docs), {n}, at::kLong);
  auto seen = d.unsqueeze(1).eq(d.unsqueeze(0)).logical_and_(at::ones({n, n}, at::kBool).tril());
  return at::zeros({n, n}, at::kFloat).masked_fill_(seen.logical_not(), -std::numeric_limits<float>::infinity());
}

void add_diagonal(const int64_t* docs, int64_t row, const SequenceRange& q, const SequenceRange& k,
                  std::vector<AttentionBlock>& blocks) {
  int64_t group_begin = 0, group_docs = 0;
  auto close_group = [&](int64_t end) {
    const int64_t n = end - group_begin;
    if (n == 0) return;
    AttentionBlock b{row, q.local_begin + group_begin, n, k.local_begin + group_begin, n, true, {}};
    if (group_docs > 1) {
      b.causal = false;
      b.mask = block_diagonal_causal_mask(docs + group_begin, n);
    }
    blocks.push_back(std::move(b));
    group_begin = end;
    group_docs = 0;
  };
  for (int64_t i = 0; i < q.length;) {
    int64_t end = i + 1;
    while (end < q.length && docs[end] == docs[i]) ++end;
    if (end - group_begin > kGroupTokens) close_group(i);  // this document does not fit the group
    ++group_docs;
    if (end - group_begin >= kGroupTokens) close_group(end);
    i = end;
  }
  close_group(q.length);
}

}  // namespace

at::Tensor packed_document_ids(const at::Tensor& position_ids) {
  MT_CHECK(position_ids.dim() == 2, "position_ids must be [B, T], got ", position_ids.sizes());
  auto pos = position_ids.to(at::kLong);
  auto step = at::diff(pos, 1, -1, pos.narrow(1, 0, 1) - 1);
  auto ids = step.ne(1).cumsum(-1);
  if (ids.select(1, ids.size(1) - 1).eq(0).all().item<bool>()) return {};
  return ids.contiguous();
}

void add_document_blocks(const at::Tensor& document_ids, SequenceRange q, SequenceRange k,
                         std::vector<AttentionBlock>& blocks) {
  MT_CHECK(document_ids.dim() == 2 && document_ids.scalar_type() == at::kLong && document_ids.is_contiguous(),
           "document_ids must be a contiguous int64 [B, T] tensor, got ", document_ids.sizes());
  const int64_t T = document_ids.size(1);
  MT_CHECK(q.length == k.length && q.global_begin + q.length <= T && k.global_begin + k.length <= T,
           "document blocks: ranges [", q.global_begin, ", +", q.length, ") and [", k.global_begin, ", +", k.length,
           ") of a sequence of ", T);
  const bool diagonal = q.global_begin == k.global_begin;
  MT_CHECK(diagonal || q.global_begin + q.length <= k.global_begin || k.global_begin + k.length <= q.global_begin,
           "document blocks: query and key ranges overlap without being equal");
  if (!diagonal && k.global_begin > q.global_begin) return;  // keys after the queries: never seen
  const int64_t n = q.length;
  for (int64_t row = 0; row < document_ids.size(0); ++row) {
    const int64_t* all = document_ids.data_ptr<int64_t>() + row * T;
    if (diagonal) {
      add_diagonal(all + q.global_begin, row, q, k, blocks);
      continue;
    }
    // Keys before queries: only the document of the last key can reach the first queries, and
    // then every query of it sees every key of it.
    const int64_t* qd = all + q.global_begin;
    const int64_t* kd = all + k.global_begin;
    const int64_t doc = kd[n - 1];
    if (qd[0] != doc) continue;
    int64_t q_len = 0, k_first = n - 1;
    while (q_len < n && qd[q_len] == doc) ++q_len;
    while (k_first > 0 && kd[k_first - 1] == doc) --k_first;
    blocks.push_back({row, q.local_begin, q_len, k.local_begin + k_first, n - k_first, false, {}});
  }
}

}  // namespace meshtrain::nn

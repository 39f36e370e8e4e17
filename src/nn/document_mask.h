// Packed rows: several documents in one row, told apart by position_ids that restart, as
// Hugging Face's find_packed_sequence_indices does, and the attention blocks of document-causal
// attention (a token sees the earlier tokens of its own document only) between two ranges of a
// packed row. Pairs of documents that never meet get no block, so a row of many short documents
// costs the sum of their squares, not a full causal row.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "nn/attention_blocks.h"

namespace meshtrain::nn {

// position_ids [B, T] -> the document of every token [B, T] (int64: 0, 0, 1, 1, 1, 2, ... where a
// position is not its predecessor + 1), or undefined when every row is one document.
at::Tensor packed_document_ids(const at::Tensor& position_ids);

// A range of the sequence: `length` tokens from global position `global_begin`, held from row
// `local_begin` of the local tensor.
struct SequenceRange {
  int64_t global_begin, local_begin, length;
};

// Appends, for every batch row, the blocks in which queries of range q see keys of range k
// under document-causal attention. document_ids [B, T] covers the whole (global) sequence. The
// ranges are equal (the causal diagonal: one block per document, short documents grouped under
// a mask) or disjoint (keys before queries: at most the one document that spans both).
void add_document_blocks(const at::Tensor& document_ids, SequenceRange q, SequenceRange k,
                         std::vector<AttentionBlock>& blocks);

}  // namespace meshtrain::nn

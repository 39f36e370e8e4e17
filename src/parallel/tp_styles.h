// The collectives of tensor parallelism as seams: the LinearStyles of the colwise and rowwise
// families (f / g, sequence all-gather / reduce-scatter, vocab-sharded embedding), the block
// entries, and the dispatcher of experts split inside. Internal to parallel/tensor_parallel.cpp.
#pragma once
#include <memory>
#include <vector>

#include "dist/comm_autograd.h"
#include "dist/group.h"
#include "nn/block_style.h"
#include "nn/linear.h"
#include "nn/token_dispatcher.h"
#include "parallel/tensor_parallel.h"

namespace meshtrain::parallel::tp_styles {

using dist::Group;

inline int64_t last_dim(const at::Tensor& t) { return t.dim() - 1; }

// How a colwise-family layer receives its input.
enum class Input {
  Replicated,       // f: identity forward, all-reduce of the input gradient
  Local,            // already received by the block's entry, no communication
  SequenceSharded,  // all-gather on T, backward reduce-scatter (lm_head under sequence parallel)
};

inline at::Tensor receive(const at::Tensor& x, Group& g, Input input) {
  switch (input) {
    case Input::Replicated: return dist::copy_to_group(x, g);
    case Input::Local: return x;
    case Input::SequenceSharded: return dist::all_gather_autograd(x, g, 1, sequence_shards(x.size(1) * g.size(), g.size()));
  }
  return x;
}

// How a rowwise-family layer hands on its partial output.
enum class Output {
  Reduced,          // g: all-reduce, backward identity
  SequenceScatter,  // reduce-scatter on T, backward all-gather (sequence parallel)
};

inline at::Tensor hand_on(const at::Tensor& y, Group& g, Output output) {
  switch (output) {
    case Output::Reduced: return dist::reduce_from_group(y, g);
    case Output::SequenceScatter: return dist::reduce_scatter_autograd(y, g, 1, sequence_shards(y.size(1), g.size()));
  }
  return y;
}

// colwise: output sharded on the last dim; optionally gathered (lm_head).
struct ColwiseStyle : nn::LinearStyle {
  ColwiseStyle(Group& g, Input input, bool gather, std::vector<int64_t> out_sizes)
      : g_(g), input_(input), gather_(gather), out_sizes_(std::move(out_sizes)) {}
  at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const override {
    auto y = at::linear(receive(x, g_, input_), w, b);
    return gather_ ? dist::gather_from_group(y.contiguous(), g_, last_dim(y), out_sizes_) : y;
  }
  Group& g_;
  Input input_;
  bool gather_;
  std::vector<int64_t> out_sizes_;
};

// kv heads replicated over tp / kv ranks: every rank holds the whole k/v projection and computes
// the one kv head its query heads use. The weight gradient, nonzero on that head's rows only, is
// summed over tp, which adds up the contributions of all the head's query heads.
struct ReplicatedKvStyle : nn::LinearStyle {
  ReplicatedKvStyle(Group& g, Input input, int64_t first_row, int64_t rows)
      : g_(g), input_(input), first_row_(first_row), rows_(rows) {}
  at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const override {
    auto mine = [&](const at::Tensor& t) { return dist::copy_to_group(t, g_).narrow(0, first_row_, rows_); };
    return at::linear(receive(x, g_, input_), mine(w), b.defined() ? mine(b) : b);
  }
  Group& g_;
  Input input_;
  int64_t first_row_, rows_;
};

// rowwise: input sharded on the last dim (split here when split_input); the replicated bias is
// added once, after the reduction.
struct RowwiseStyle : nn::LinearStyle {
  RowwiseStyle(Group& g, bool split_input, Output output, std::vector<int64_t> in_sizes)
      : g_(g), split_(split_input), output_(output), in_sizes_(std::move(in_sizes)) {}
  at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const override {
    auto local = split_ ? dist::scatter_to_group(x, g_, last_dim(x), in_sizes_) : x;
    auto y = hand_on(at::linear(local, w), g_, output_);
    return b.defined() ? y + b : y;
  }
  Group& g_;
  bool split_;
  Output output_;
  std::vector<int64_t> in_sizes_;
};

// embedding_rowwise: rank r owns vocab rows [start, start + rows); other ids look up zeros;
// the partial embeddings are summed (all-reduce, or reduce-scatter on T under sequence parallel).
struct EmbeddingRowwiseStyle : nn::LinearStyle {
  EmbeddingRowwiseStyle(Group& g, int64_t start, Output output) : g_(g), start_(start), output_(output) {}
  at::Tensor embedding(const at::Tensor& ids, const at::Tensor& w) const override {
    auto local = ids - start_;
    auto outside = (local < 0).logical_or(local >= w.size(0));
    auto y = at::embedding(w.size(0) ? w : at::zeros({1, w.size(1)}, w.options()), local.masked_fill(outside, 0));
    return hand_on(y.masked_fill(outside.unsqueeze(-1), 0.0), g_, output_);
  }
  Group& g_;
  int64_t start_;
  Output output_;
};

// A replicated embedding under sequence parallelism: each rank keeps its T shard of the output.
struct SequenceScatterEmbedding : nn::LinearStyle {
  explicit SequenceScatterEmbedding(Group& g) : g_(g) {}
  at::Tensor embedding(const at::Tensor& ids, const at::Tensor& w) const override {
    return dist::scatter_to_group(at::embedding(w, ids), g_, 1, sequence_shards(ids.size(1), g_.size()));
  }
  Group& g_;
};

// A replicated Linear reading the sequence-sharded stream (an unsharded lm_head under sequence
// parallel): gather T, every rank computes the same output (backward: its own T slice).
struct SequenceGatherLinear : nn::LinearStyle {
  explicit SequenceGatherLinear(Group& g) : g_(g) {}
  at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const override {
    return at::linear(dist::gather_from_group(x, g_, 1, sequence_shards(x.size(1) * g_.size(), g_.size())), w, b);
  }
  Group& g_;
};

// The entry of a block whose input projections are all colwise: one f (or, under sequence
// parallelism, one all-gather on T) for all of them, as Megatron does, not one per projection.
// Its rowwise output projection is the exit.
struct BlockEntry : nn::BlockStyle {
  BlockEntry(Group& g, Input input) : g_(g), input_(input) {}
  at::Tensor enter(const at::Tensor& x) const override { return receive(x, g_, input_); }
  Group& g_;
  Input input_;
};

// A MoE block under sequence parallelism: every tp rank routes and computes the whole sequence
// (backward: its own T slice of the gradient), and keeps its T shard of the output (backward:
// the gradient all-gathered). The experts' own f and sum over tp run inside.
struct SequenceGatheredMoe : nn::BlockStyle {
  explicit SequenceGatheredMoe(Group& g) : g_(g) {}
  at::Tensor enter(const at::Tensor& x) const override {
    return dist::gather_from_group(x, g_, 1, sequence_shards(x.size(1) * g_.size(), g_.size()));
  }
  at::Tensor leave(const at::Tensor& y) const override {
    return dist::scatter_to_group(y, g_, 1, sequence_shards(y.size(1), g_.size()));
  }
  Group& g_;
};

// The experts split inside over tp: every tp rank computes its slice of every expert for the
// same tokens, so the tokens and routing weights enter by f and the partial outputs are summed
// after the inner dispatcher's combine.
class TpExpertsDispatcher : public nn::TokenDispatcher {
 public:
  TpExpertsDispatcher(std::shared_ptr<nn::TokenDispatcher> inner, dist::Group& tp)
      : inner_(std::move(inner)), tp_(tp) {}

  nn::ExpertRange local_experts(int64_t num_experts) const override { return inner_->local_experts(num_experts); }

  nn::DispatchedTokens dispatch(const at::Tensor& hidden, const at::Tensor& expert_ids, const at::Tensor& weights,
                                const nn::DispatchOptions& options) override {
    return inner_->dispatch(dist::copy_to_group(hidden, tp_), expert_ids, dist::copy_to_group(weights, tp_), options);
  }

  at::Tensor combine(const at::Tensor& expert_out, const nn::DispatchedTokens& d) override {
    return dist::reduce_from_group(inner_->combine(expert_out, d), tp_);
  }

  std::shared_ptr<nn::TokenDispatcher> around(std::shared_ptr<nn::TokenDispatcher> core) override {
    return std::make_shared<TpExpertsDispatcher>(inner_->around(std::move(core)), tp_);
  }

 private:
  std::shared_ptr<nn::TokenDispatcher> inner_;
  dist::Group& tp_;
};


}  // namespace meshtrain::parallel::tp_styles

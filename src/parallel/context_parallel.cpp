#include "parallel/context_parallel.h"

#include <torch/csrc/autograd/custom_function.h>

#include <limits>

#include "dist/collectives.h"
#include "nn/attention_blocks.h"
#include "nn/document_mask.h"
#include "util/check.h"

namespace meshtrain::parallel {

// ---------------------------------------------------------------------------------------------
// Load-balanced sharding

namespace {

void check_load_balance(int64_t seq_len, int64_t cp) {
  MT_CHECK(cp >= 1, "context parallelism: cp must be >= 1, got ", cp);
  MT_CHECK(seq_len % (2 * cp) == 0, "context parallelism: sequence length T=", seq_len, " is not divisible by 2*cp=",
           2 * cp, " (cp=", cp, "); head-tail load balancing splits the sequence into 2*cp equal chunks");
}

int64_t seq_dim(const at::Tensor& x, int64_t dim) {
  MT_CHECK(dim >= 0 && dim < x.dim(), "context parallelism: sequence dim ", dim, " out of range for a tensor of shape ",
           x.sizes());
  return dim;
}

}  // namespace

std::vector<int64_t> load_balanced_positions(int64_t seq_len, int64_t cp, int64_t rank) {
  MT_CHECK(rank >= 0 && rank < cp, "context parallelism: rank ", rank, " outside cp=", cp);
  if (cp == 1) {  // the whole sequence, any length
    std::vector<int64_t> all(seq_len);
    for (int64_t p = 0; p < seq_len; ++p) all[p] = p;
    return all;
  }
  check_load_balance(seq_len, cp);
  const int64_t c = seq_len / (2 * cp);
  std::vector<int64_t> positions;
  for (int64_t chunk : {rank, 2 * cp - 1 - rank})
    for (int64_t p = chunk * c; p < (chunk + 1) * c; ++p) positions.push_back(p);
  return positions;
}

std::vector<int64_t> load_balanced_order(int64_t seq_len, int64_t cp) {
  std::vector<int64_t> order;
  for (int64_t r = 0; r < cp; ++r) {
    auto mine = load_balanced_positions(seq_len, cp, r);
    order.insert(order.end(), mine.begin(), mine.end());
  }
  return order;
}

at::Tensor shard_load_balanced(const at::Tensor& x, int64_t cp, int64_t rank, int64_t dim) {
  dim = seq_dim(x, dim);
  const int64_t seq_len = x.size(dim);
  MT_CHECK(rank >= 0 && rank < cp, "context parallelism: rank ", rank, " outside cp=", cp);
  if (cp == 1) return x;
  check_load_balance(seq_len, cp);
  const int64_t c = seq_len / (2 * cp);
  return at::cat({x.narrow(dim, rank * c, c), x.narrow(dim, (2 * cp - 1 - rank) * c, c)}, dim);
}

at::Tensor unshard_load_balanced(const std::vector<at::Tensor>& shards, int64_t dim) {
  MT_CHECK(!shards.empty(), "unshard_load_balanced: no shards");
  const int64_t cp = static_cast<int64_t>(shards.size());
  if (cp == 1) return shards[0];
  const int64_t local = shards[0].size(seq_dim(shards[0], dim));
  MT_CHECK(local % 2 == 0, "unshard_load_balanced: a shard holds two equal chunks, got length ", local);
  const int64_t c = local / 2;
  std::vector<at::Tensor> chunks;
  for (int64_t j = 0; j < 2 * cp; ++j) {
    // Chunk j is the head of shard j, or the tail of shard 2·cp−1−j.
    chunks.push_back(j < cp ? shards[j].narrow(dim, 0, c) : shards[2 * cp - 1 - j].narrow(dim, c, c));
  }
  return at::cat(chunks, dim);
}

at::Tensor gather_load_balanced(const at::Tensor& shard, dist::Group& cp_group, int64_t dim) {
  if (cp_group.size() == 1) return shard;
  auto all = dist::all_gather(cp_group, shard.contiguous(), seq_dim(shard, dim));
  return unshard_load_balanced(all.chunk(cp_group.size(), dim), dim);
}

at::Tensor load_balanced_position_ids(int64_t batch, int64_t seq_len, int64_t cp, int64_t rank) {
  auto positions = load_balanced_positions(seq_len, cp, rank);
  auto row = at::tensor(positions, at::kLong);
  return row.unsqueeze(0).expand({batch, row.size(0)}).contiguous();
}

// ---------------------------------------------------------------------------------------------
// Causal-mask validation (trainer_pt_utils.is_attention_mask_causal)

bool is_attention_mask_causal(const at::Tensor& mask) {
  if (!mask.defined() || mask.dim() == 2) return true;
  if (mask.dim() != 3 && mask.dim() != 4) return false;
  auto m = mask.dim() == 3 ? mask[0] : mask[0][0];
  if (m.size(-1) <= 1) return true;
  auto above = at::ones({m.size(0), m.size(1)}, at::kBool).triu(1);
  auto upper = m.to(at::kFloat).masked_select(above);
  if (upper.numel() == 0) return true;
  return (upper <= 1e-6).all().item<bool>() || (upper < -1e4).all().item<bool>();
}

void check_context_parallel_mask(const at::Tensor& mask) {
  MT_CHECK(is_attention_mask_causal(mask),
           "Context parallelism only supports causal attention masks. The provided attention_mask is not causal. "
           "Please ensure your data uses causal masking (lower triangular) or remove the attention_mask to use the "
           "model's default causal masking.");
}

void check_context_parallel_causal(bool is_causal) {
  MT_CHECK(is_causal, "Load balancing requires `is_causal=True`.");
}

// ---------------------------------------------------------------------------------------------
// Ring attention

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The unmasked part of one step's block. We hold chunks (rank, 2·cp−1−rank), the source holds
// (src, 2·cp−1−src), each of c rows; a query chunk i sees a key chunk j fully when j < i,
// causally when j == i, and not at all when j > i. Hence:
//  - src == rank: both our chunks against both of theirs, causal on the concatenation (chunk
//    rank < chunk 2·cp−1−rank, so the concatenation is in global order);
//  - src < rank:  both our chunks see the source's head chunk src fully (src < rank), and
//    neither sees its tail 2·cp−1−src (> 2·cp−1−rank > rank);
//  - src > rank:  our head chunk rank sees nothing (src > rank, 2·cp−1−src >= cp > rank), our
//    tail chunk 2·cp−1−rank sees both of the source's chunks fully (src < cp <= 2·cp−1−rank,
//    2·cp−1−src < 2·cp−1−rank).
// Every block but the diagonal is c × 2c, so the ranks stay balanced, and none is fully masked.
// Packed documents narrow each pair of chunks to the documents they share (nn/document_mask.h),
// and pairs of documents that never meet get no block.
std::vector<nn::AttentionBlock> blocks_for(int src, int rank, int cp, int64_t c, const at::Tensor& document_ids) {
  if (!document_ids.defined()) {
    if (src == rank) return {{-1, 0, 2 * c, 0, 2 * c, true, {}}};
    if (src < rank) return {{-1, 0, 2 * c, 0, c, false, {}}};
    return {{-1, c, c, 0, 2 * c, false, {}}};
  }
  std::vector<nn::AttentionBlock> blocks;
  const int64_t ours[2] = {rank, 2 * cp - 1 - rank}, theirs[2] = {src, 2 * cp - 1 - src};
  for (int64_t qi = 0; qi < 2; ++qi)
    for (int64_t kj = 0; kj < 2; ++kj)
      nn::add_document_blocks(document_ids, {ours[qi] * c, qi * c, c}, {theirs[kj] * c, kj * c, c}, blocks);
  return blocks;
}

// K and V travel as one flat buffer [2·numel(k)].
at::Tensor pack(const at::Tensor& k, const at::Tensor& v) { return at::cat({k.reshape(-1), v.reshape(-1)}); }
std::pair<at::Tensor, at::Tensor> unpack(const at::Tensor& buf, at::IntArrayRef shape) {
  const int64_t n = buf.size(0) / 2;
  return {buf.narrow(0, 0, n).view(shape), buf.narrow(0, n, n).view(shape)};
}

constexpr int kTagKv = 0;
constexpr int kTagGradKv = 1;

// The K/V buffer of each step: step i holds the one of source (rank − i) mod cp. The ring
// passes its current buffer to rank + 1 while the step computes and receives the next from
// rank − 1; the all-gather fetches all of them up front.
class KvStream {
 public:
  KvStream(dist::Group& g, at::Tensor local, CpCommStrategy strategy)
      : g_(g), strategy_(strategy), n_(local.size(0)), device_(local.device()) {
    if (strategy_ == CpCommStrategy::AllGather)
      all_ = dist::all_gather(g_, local, 0);
    else
      current_ = std::move(local);
  }
  int source(int step) const { return (g_.rank() - step + g_.size()) % g_.size(); }

  at::Tensor begin_step(int step) {
    if (strategy_ == CpCommStrategy::AllGather) return all_.narrow(0, source(step) * n_, n_);
    if (step + 1 < g_.size()) {
      next_ = at::empty(current_.sizes(), current_.options().device(g_.device()));  // received where the group receives
      step_ = dist::exchange_async(g_, current_, (g_.rank() + 1) % g_.size(), next_,
                                   (g_.rank() - 1 + g_.size()) % g_.size(), kTagKv);
    }
    return current_;
  }
  void end_step(int step) {
    if (strategy_ == CpCommStrategy::AllGather || step + 1 >= g_.size()) return;
    dist::wait_work(g_, step_.recv, "ring attention recv");
    dist::wait_work(g_, step_.send, "ring attention send");
    current_ = next_.to(device_);
  }

 private:
  dist::Group& g_;
  CpCommStrategy strategy_;
  int64_t n_;
  c10::Device device_;
  at::Tensor all_, current_, next_;
  dist::Exchange step_;
};

std::pair<at::Tensor, at::Tensor> ring_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                               const at::Tensor& document_ids, dist::Group& g, double scale,
                                               CpCommStrategy strategy) {
  const int64_t c = q.size(2) / 2;
  KvStream kv(g, pack(k, v), strategy);
  auto out = at::zeros(q.sizes(), q.options().dtype(at::kFloat));
  auto lse = at::full({q.size(0), q.size(1), q.size(2)}, -std::numeric_limits<float>::infinity(),
                      q.options().dtype(at::kFloat));
  for (int step = 0; step < g.size(); ++step) {
    auto [kb, vb] = unpack(kv.begin_step(step), k.sizes());
    nn::attend_blocks(blocks_for(kv.source(step), g.rank(), g.size(), c, document_ids), q, kb, vb, scale, out, lse);
    kv.end_step(step);
  }
  return {out.to(q.scalar_type()), lse};
}

// dq, dk, dv of the local q, k, v. Each step's block gradients come from the merged out and
// lse (so every block sees the global softmax); dq accumulates here in fp32, and the dk/dv of the
// step's source accumulate in fp32 on their way around the ring (one extra hop brings them home)
// or, with the all-gather, in one buffer per source that a reduce-scatter returns to its owner.
std::tuple<at::Tensor, at::Tensor, at::Tensor> ring_backward(const at::Tensor& dout, const at::Tensor& q,
                                                             const at::Tensor& k, const at::Tensor& v,
                                                             const at::Tensor& out, const at::Tensor& lse,
                                                             const at::Tensor& document_ids, dist::Group& g,
                                                             double scale, CpCommStrategy strategy) {
  const int cp = g.size(), rank = g.rank();
  const int64_t c = q.size(2) / 2;
  auto local = pack(k, v);
  const int64_t n = local.size(0);
  KvStream kv(g, local, strategy);
  auto dq = at::zeros(q.sizes(), q.options().dtype(at::kFloat));
  const bool ring = strategy == CpCommStrategy::Ring;
  // Ring: the gradient buffer of the current step's source. All-gather: one row per source.
  auto dkv = ring ? at::zeros({n}, q.options().dtype(at::kFloat)) : at::zeros({cp, n}, q.options().dtype(at::kFloat));
  at::Tensor dkv_next;
  dist::Exchange dkv_step;
  for (int step = 0; step < cp; ++step) {
    auto [kb, vb] = unpack(kv.begin_step(step), k.sizes());
    const int src = kv.source(step);
    if (ring && step > 0) {
      dist::wait_work(g, dkv_step.recv, "ring attention gradient recv");
      dist::wait_work(g, dkv_step.send, "ring attention gradient send");
      dkv = dkv_next.to(q.device());
    }
    auto [dk_acc, dv_acc] = unpack(ring ? dkv : dkv[src], k.sizes());
    nn::attend_blocks_backward(blocks_for(src, rank, cp, c, document_ids), dout, q, kb, vb, out, lse, scale, dq,
                               dk_acc, dv_acc);
    if (ring) {  // on to the next holder of this source; after the last step, to its owner
      dkv_next = at::empty(dkv.sizes(), dkv.options().device(g.device()));
      dkv_step = dist::exchange_async(g, dkv, (rank + 1) % cp, dkv_next, (rank - 1 + cp) % cp, kTagGradKv);
    }
    kv.end_step(step);
  }
  at::Tensor mine;
  if (ring) {
    dist::wait_work(g, dkv_step.recv, "ring attention gradient recv");
    dist::wait_work(g, dkv_step.send, "ring attention gradient send");
    mine = dkv_next.to(q.device());
  } else {
    mine = dist::reduce_scatter(g, dkv, 0).reshape({n});
  }
  auto [dk, dv] = unpack(mine, k.sizes());
  return {dq.to(q.scalar_type()), dk.to(k.scalar_type()), dv.to(v.scalar_type())};
}

struct RingAttentionFn : torch::autograd::Function<RingAttentionFn> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const std::optional<at::Tensor>& documents, dist::Group* g, double scale,
                               CpCommStrategy strategy) {
    auto qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
    const auto document_ids = documents.value_or(at::Tensor());
    auto [out, lse] = ring_forward(qc, kc, vc, document_ids, *g, scale, strategy);
    if (document_ids.defined()) ctx->saved_data["documents"] = document_ids;
    ctx->saved_data["group"] = reinterpret_cast<int64_t>(g);
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["strategy"] = static_cast<int64_t>(strategy);
    ctx->save_for_backward({qc, kc, vc, out, lse});
    ctx->mark_non_differentiable({lse});
    return {out, lse};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& q = saved[0];
    const auto& out = saved[3];
    // Every rank of the ring must take part, even one whose output received no gradient.
    auto dout = grads[0].defined() ? grads[0] : at::zeros_like(out);
    auto* g = reinterpret_cast<dist::Group*>(ctx->saved_data["group"].toInt());
    const auto documents = ctx->saved_data.count("documents") ? ctx->saved_data["documents"].toTensor() : at::Tensor();
    auto [dq, dk, dv] =
        ring_backward(dout, q, saved[1], saved[2], out, saved[4], documents, *g, ctx->saved_data["scale"].toDouble(),
                      static_cast<CpCommStrategy>(ctx->saved_data["strategy"].toInt()));
    return {dq, dk, dv, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

RingAttention::RingAttention(dist::Group& cp_group, CpCommStrategy strategy) : group_(&cp_group), strategy_(strategy) {}

nn::AttentionResult RingAttention::forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                                           const at::Tensor& document_ids) {
  MT_CHECK(q.dim() == 4 && k.dim() == 4 && v.sizes() == k.sizes() && q.size(0) == k.size(0) && q.size(3) == k.size(3),
           "ring attention expects q [B, H, T/cp, d] and k, v [B, Hkv, T/cp, d]; got q ", q.sizes(), ", k ", k.sizes(),
           ", v ", v.sizes());
  MT_CHECK(q.size(1) % k.size(1) == 0, "ring attention: ", q.size(1), " query heads are not a multiple of ", k.size(1),
           " kv heads");
  MT_CHECK(q.size(2) == k.size(2), "is_causal requires the same query and context sequence lengths (got ", q.size(2),
           " and ", k.size(2), ")");
  if (group_->size() == 1) return nn::LocalCausalAttention().forward(q, k, v, scale, document_ids);
  MT_CHECK(q.size(2) % 2 == 0, "ring attention: a rank holds two equal chunks of the load-balanced sequence, so its "
           "length T/cp must be even; got ", q.size(2), " (cp=", group_->size(), ")");
  MT_CHECK(!document_ids.defined() ||
               (document_ids.size(0) == q.size(0) && document_ids.size(1) == q.size(2) * group_->size()),
           "ring attention: document_ids ", document_ids.sizes(), " do not cover ", q.size(0), " rows of ",
           q.size(2) * group_->size(), " tokens (T/cp=", q.size(2), ", cp=", group_->size(), ")");
  auto documents = document_ids.defined() ? std::optional<at::Tensor>(document_ids) : std::nullopt;
  auto res = RingAttentionFn::apply(q, k, v, documents, group_, scale, strategy_);
  return {res[0], res[1]};
}

}  // namespace meshtrain::parallel

#include "parallel/ulysses.h"

#include "dist/collectives.h"
#include "dist/comm_autograd.h"
#include "util/check.h"

namespace meshtrain::parallel {

void check_ulysses_heads(int64_t num_heads, int64_t num_kv_heads, int64_t sp) {
  MT_CHECK(num_heads % sp == 0, "Attention head count ", num_heads, " is not divisible by SP size ", sp);
  MT_CHECK(num_kv_heads % sp == 0 || sp % num_kv_heads == 0, "KV attention head count ", num_kv_heads,
           " is not divisible by SP size ", sp, " or vice versa");
}

namespace {

// The two all-to-alls, each a reshape around all_to_all_autograd over rows [sp, ...] (row j
// goes to / came from sp rank j), so autograd runs the reverse exchange in backward.

// [B, H, T/sp, d] (all heads, this rank's rows) -> [B, H/sp, T, d] (head group `rank`, all rows).
at::Tensor sequence_to_heads(const at::Tensor& x, dist::Group& g) {
  const int64_t sp = g.size(), B = x.size(0), H = x.size(1), Ts = x.size(2), d = x.size(3);
  auto send = x.reshape({B, sp, H / sp, Ts, d}).permute({1, 0, 2, 3, 4}).contiguous();
  const std::vector<int64_t> ones(sp, 1);
  auto recv = dist::all_to_all_autograd(send, g, ones, ones);  // [sp (row slice), B, H/sp, Ts, d]
  return recv.permute({1, 2, 0, 3, 4}).reshape({B, H / sp, sp * Ts, d});
}

// [B, H/sp, T, d] -> [B, H, T/sp, d]; the inverse of sequence_to_heads.
at::Tensor heads_to_sequence(const at::Tensor& x, dist::Group& g) {
  const int64_t sp = g.size(), B = x.size(0), Hl = x.size(1), Ts = x.size(2) / sp, d = x.size(3);
  auto send = x.reshape({B, Hl, sp, Ts, d}).permute({2, 0, 1, 3, 4}).contiguous();
  const std::vector<int64_t> ones(sp, 1);
  auto recv = dist::all_to_all_autograd(send, g, ones, ones);  // [sp (head group), B, H/sp, Ts, d]
  return recv.permute({1, 0, 2, 3, 4}).reshape({B, sp * Hl, Ts, d});
}

// lse [B, H/sp, T] -> [B, H, T/sp] (no gradient flows through the log-sum-exp).
at::Tensor lse_to_sequence(const at::Tensor& lse, dist::Group& g) {
  const int64_t sp = g.size(), B = lse.size(0), Hl = lse.size(1), Ts = lse.size(2) / sp;
  auto send = lse.detach().reshape({B, Hl, sp, Ts}).permute({2, 0, 1, 3}).contiguous();
  const std::vector<int64_t> ones(sp, 1);
  auto recv = dist::all_to_all(g, send, ones, ones);
  return recv.permute({1, 0, 2, 3}).reshape({B, sp * Hl, Ts});
}

}  // namespace

UlyssesAttention::UlyssesAttention(dist::Group& sp_group, std::shared_ptr<nn::AttentionCore> inner)
    : group_(&sp_group), inner_(std::move(inner)) {
  MT_CHECK(inner_ != nullptr, "UlyssesAttention needs an inner attention core");
}

nn::AttentionResult UlyssesAttention::forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                              double scale, const at::Tensor& document_ids) {
  MT_CHECK(q.dim() == 4 && k.dim() == 4 && v.sizes() == k.sizes() && q.size(0) == k.size(0) &&
               q.size(2) == k.size(2) && q.size(3) == k.size(3),
           "Ulysses attention expects q [B, H, T/sp, d] and k, v [B, Hkv, T/sp, d]; got q ", q.sizes(), ", k ",
           k.sizes(), ", v ", v.sizes());
  const int64_t sp = group_->size();
  if (sp == 1) return inner_->forward(q, k, v, scale, document_ids);
  check_ulysses_heads(q.size(1), k.size(1), sp);
  // Fewer kv heads than ranks: each kv head is replicated sp/Hkv times, so rank j receives the
  // kv head its query heads [j·H/sp, (j+1)·H/sp) use; autograd sums the replicas' gradients.
  const int64_t replicate = k.size(1) < sp ? sp / k.size(1) : 1;
  auto kr = nn::repeat_kv(k, replicate), vr = nn::repeat_kv(v, replicate);
  auto res = inner_->forward(sequence_to_heads(q, *group_), sequence_to_heads(kr, *group_),
                             sequence_to_heads(vr, *group_), scale, document_ids);
  return {heads_to_sequence(res.out, *group_), lse_to_sequence(res.lse, *group_)};
}

at::Tensor shard_contiguous(const at::Tensor& x, int64_t sp, int64_t rank, int64_t dim) {
  MT_CHECK(dim >= 0 && dim < x.dim(), "sequence dim ", dim, " out of range for a tensor of shape ", x.sizes());
  MT_CHECK(rank >= 0 && rank < sp, "sequence parallelism: rank ", rank, " outside sp=", sp);
  if (sp == 1) return x;
  const int64_t seq_len = x.size(dim);
  MT_CHECK(seq_len % sp == 0, "batch's seqlen=", seq_len, " isn't divisible by sp-size=", sp);
  return x.narrow(dim, rank * (seq_len / sp), seq_len / sp);
}

at::Tensor shard_sequence(const at::Tensor& x, const dist::DeviceMesh& mesh, int64_t dim) {
  auto cp_shard = shard_load_balanced(x, mesh.size(MeshDim::Cp), mesh.coordinate(MeshDim::Cp), dim);
  return shard_contiguous(cp_shard, mesh.size(MeshDim::Sp), mesh.coordinate(MeshDim::Sp), dim).contiguous();
}

at::Tensor sequence_position_ids(int64_t batch, int64_t seq_len, const dist::DeviceMesh& mesh) {
  auto positions = at::arange(seq_len, at::kLong).unsqueeze(0).expand({batch, seq_len});
  return shard_sequence(positions, mesh, 1);
}

at::Tensor gather_sequence(const at::Tensor& shard, const dist::DeviceMesh& mesh, int64_t dim) {
  auto& sp = mesh.group(MeshDim::Sp);
  auto cp_shard = sp.size() == 1 ? shard : dist::all_gather(sp, shard.contiguous(), dim);
  return gather_load_balanced(cp_shard, mesh.group(MeshDim::Cp), dim);
}

void apply_sequence_sharded_attention(models::LlamaForCausalLM& model, dist::Group& cp, dist::Group& sp,
                                      CpCommStrategy strategy) {
  if (cp.size() == 1 && sp.size() == 1) return;
  std::shared_ptr<nn::AttentionCore> core = std::make_shared<nn::LocalCausalAttention>();
  if (cp.size() > 1) core = std::make_shared<RingAttention>(cp, strategy);
  if (sp.size() > 1) {
    const auto& c = model.config();
    check_ulysses_heads(c.num_attention_heads, c.num_key_value_heads, sp.size());
    core = std::make_shared<UlyssesAttention>(sp, core);
  }
  for (auto& layer : model.model->layers)
    if (layer) layer->self_attn->set_core(core);
}

}  // namespace meshtrain::parallel

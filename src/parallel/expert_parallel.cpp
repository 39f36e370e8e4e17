#include "parallel/expert_parallel.h"

#include <algorithm>

#include "dist/collectives.h"
#include "dist/comm_autograd.h"
#include "util/check.h"

namespace meshtrain::parallel {

namespace {

// Router masking: rank r computes experts [r·E/ep, (r+1)·E/ep) for every token.
class RouterMaskingDispatcher : public nn::TokenDispatcher {
 public:
  RouterMaskingDispatcher(dist::Group& ep, nn::ExpertRange mine) : ep_(ep), mine_(mine) {}

  nn::ExpertRange local_experts(int64_t) const override { return mine_; }

  nn::DispatchedTokens dispatch(const at::Tensor& hidden, const at::Tensor& expert_ids, const at::Tensor& weights,
                                const nn::DispatchOptions& options) override {
    const int64_t n = hidden.size(0), k = expert_ids.size(1);
    // Every rank sees every assignment: the capacity and the dropped count are the serial ones.
    const int64_t capacity = nn::expert_capacity(options.capacity_factor, n, k, options.num_experts);
    at::Tensor local_ids;
    int64_t dropped = 0;
    {
      at::NoGradGuard no_grad;
      if (capacity >= 0) {
        auto counts = at::bincount(expert_ids.reshape({-1}), {}, options.num_experts);
        dropped = (counts - capacity).clamp_min(0).sum().item<int64_t>();
      }
      // Other ranks' experts go to the sentinel num_local_experts, a segment nobody computes.
      local_ids = expert_ids - mine_.first;
      local_ids = local_ids.masked_fill((local_ids < 0).logical_or(local_ids >= mine_.count), mine_.count);
    }
    auto sorted = nn::sort_by_expert(local_ids, mine_.count + 1, capacity);
    auto counts = sorted.counts.cpu();
    const int64_t kept = counts.slice(0, 0, mine_.count).sum().item<int64_t>();
    auto order = sorted.order.slice(0, 0, kept);  // the sentinel's rows sort last
    nn::DispatchedTokens d;
    d.num_tokens = n;
    d.dropped = dropped;
    d.token_index = at::div(order, k, "floor");
    // f on the tokens and the routing weights: each rank's gradients cover its experts only.
    d.rows = dist::copy_to_group(hidden, ep_).index_select(0, d.token_index);
    d.row_weights = dist::copy_to_group(weights, ep_).reshape({-1}).index_select(0, order);
    d.rows_per_expert.assign(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + mine_.count);
    return d;
  }

  at::Tensor combine(const at::Tensor& expert_out, const nn::DispatchedTokens& d) override {
    return dist::reduce_from_group(nn::TokenDispatcher::combine(expert_out, d), ep_);
  }

 private:
  dist::Group& ep_;
  nn::ExpertRange mine_;
};

// Token dispatch: each rank routes its own tokens; rows for expert e travel to the rank holding
// it (all-to-all with variable splits), are computed there grouped by local expert, and come
// back the same way to be weighted and summed on the token's own rank.
class AllToAllDispatcher : public nn::TokenDispatcher {
 public:
  AllToAllDispatcher(dist::Group& ep, nn::ExpertRange mine) : ep_(ep), mine_(mine) {}

  nn::ExpertRange local_experts(int64_t) const override { return mine_; }

  struct Exchange {
    std::vector<int64_t> send_sizes, recv_sizes;  // rows per ep rank
    at::Tensor to_expert_order;                   // received rows (by source rank) -> by local expert
    at::Tensor from_expert_order;                 // its inverse
  };

  nn::DispatchedTokens dispatch(const at::Tensor& hidden, const at::Tensor& expert_ids, const at::Tensor& weights,
                                const nn::DispatchOptions& options) override {
    const int64_t n = hidden.size(0), k = expert_ids.size(1), ep = ep_.size(), local = mine_.count;
    // Sorted by global expert, the rows are grouped by destination rank too.
    auto sorted = nn::sort_by_expert(expert_ids, options.num_experts,
                                     nn::expert_capacity(options.capacity_factor, n, k, options.num_experts));
    nn::DispatchedTokens d;
    d.num_tokens = n;
    d.dropped = sorted.dropped;
    d.token_index = at::div(sorted.order, k, "floor");
    d.row_weights = weights.reshape({-1}).index_select(0, sorted.order);
    // counts[r][j]: rows this rank sends to rank r's local expert j; exchanged, what it receives.
    auto counts = sorted.counts.view({ep, local}).contiguous();
    // The sizes are read on the host (a no-op on CPU).
    auto received = dist::all_to_all(ep_, counts, std::vector<int64_t>(ep, 1), std::vector<int64_t>(ep, 1)).cpu();
    auto exchange = std::make_shared<Exchange>();
    auto send = counts.sum(1).cpu(), recv = received.sum(1);
    exchange->send_sizes.assign(send.data_ptr<int64_t>(), send.data_ptr<int64_t>() + ep);
    exchange->recv_sizes.assign(recv.data_ptr<int64_t>(), recv.data_ptr<int64_t>() + ep);
    // Received rows come by source rank, each block by local expert: reorder them by expert.
    auto count = received.accessor<int64_t, 2>();
    std::vector<int64_t> start(static_cast<size_t>(ep * local)), order;
    for (int64_t i = 1; i < ep * local; ++i) start[i] = start[i - 1] + count[(i - 1) / local][(i - 1) % local];
    for (int64_t j = 0; j < local; ++j)
      for (int64_t s = 0; s < ep; ++s)
        for (int64_t row = 0; row < count[s][j]; ++row) order.push_back(start[s * local + j] + row);
    exchange->to_expert_order = at::tensor(order, at::kLong).to(hidden.device());
    exchange->from_expert_order = at::argsort(exchange->to_expert_order);
    auto per_expert = received.sum(0);
    d.rows_per_expert.assign(per_expert.data_ptr<int64_t>(), per_expert.data_ptr<int64_t>() + local);
    auto arrived = dist::all_to_all_autograd(hidden.index_select(0, d.token_index).contiguous(), ep_,
                                             exchange->send_sizes, exchange->recv_sizes);
    d.rows = arrived.index_select(0, exchange->to_expert_order);
    d.context = exchange;
    return d;
  }

  at::Tensor combine(const at::Tensor& expert_out, const nn::DispatchedTokens& d) override {
    const auto& exchange = *std::static_pointer_cast<Exchange>(d.context);
    auto back = dist::all_to_all_autograd(expert_out.index_select(0, exchange.from_expert_order).contiguous(), ep_,
                                          exchange.recv_sizes, exchange.send_sizes);
    return nn::TokenDispatcher::combine(back, d);
  }

 private:
  dist::Group& ep_;
  nn::ExpertRange mine_;
};

void shard_experts(models::LlamaForCausalLM& model, const std::string& name, at::Tensor& param,
                   const nn::ExpertRange& mine, EpMode mode) {
  at::NoGradGuard no_grad;
  auto& place = model.placement(name);
  MT_CHECK(param.size(0) == place.global_shape[0], "expert parallelism expects all experts; ", name,
           " is already sharded on dim 0");
  param.set_data(param.narrow(0, mine.first, mine.count).clone());
  // Data parallelism leaves the experts to the ranks holding the same ones (ep_replicate).
  using enum MeshDim;
  const auto shard = nn::Placement::shard(0);
  if (mode == EpMode::AllToAll) {  // ep: a block of the dp_shard × cp ranks
    place.split(DpCpSp, {{EpReplicate, nn::Placement::replicate()}, {Ep, shard}});
  } else {  // ep: strided over tp; etp, the rest of tp, holds them alike unless tp split them inside
    place.split(DpCpSp, {{EpReplicate, nn::Placement::replicate()}});
    if (place.on(Ep)) place.split(Ep, {{Ep, shard}});
    else place.split(Tp, {{Etp, nn::Placement::replicate()}, {Ep, shard}});
  }
  place.narrow(0, mine.first, mine.count);
}

}  // namespace

void apply_expert_parallel(models::LlamaForCausalLM& model, dist::Group& ep, EpMode mode) {
  const auto& layers = model.model->layers;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (!layers[i]) continue;  // not on this pipeline stage
    auto& moe = layers[i]->moe;
    if (!moe) continue;
    const int64_t num_experts = moe->shape().num_experts;
    MT_CHECK(num_experts % ep.size() == 0, "The number of experts must be divisible by number of ep_size: ",
             num_experts, " % ", ep.size(), " != 0");
    const int64_t count = num_experts / ep.size();
    const nn::ExpertRange mine{ep.rank() * count, count};
    const std::string prefix = "model.layers." + std::to_string(i) + ".mlp.experts.";
    shard_experts(model, prefix + "gate_up_proj", moe->experts->gate_up_proj, mine, mode);
    shard_experts(model, prefix + "down_proj", moe->experts->down_proj, mine, mode);
    std::shared_ptr<nn::TokenDispatcher> dispatcher;
    if (mode == EpMode::AllReduce) dispatcher = std::make_shared<RouterMaskingDispatcher>(ep, mine);
    else dispatcher = std::make_shared<AllToAllDispatcher>(ep, mine);
    // Inside tensor parallelism of the experts, when tp installed it.
    moe->set_dispatcher(moe->dispatcher()->around(dispatcher));
  }
}

}  // namespace meshtrain::parallel

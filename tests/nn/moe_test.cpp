// The sparse MoE block against a naive dense reference (every expert on every token, combined
// with the dense routing weights): both GEMM paths, outputs and gradients; the capacity limit
// (what is dropped, and that it is counted); the load-balancing loss by its definition.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "nn/moe.h"
#include "util/check.h"

using namespace meshtrain;
using ::testing::StrEq;
using ::testing::ThrowsMessage;

namespace {

std::shared_ptr<nn::SparseMoe> random_moe(const nn::MoeShape& s, uint64_t seed) {
  at::manual_seed(seed);
  auto moe = std::make_shared<nn::SparseMoe>(s);
  at::NoGradGuard no_grad;
  for (auto& p : moe->parameters()) p.normal_(0.0, 0.3);
  return moe;
}

// out[n] = sum over e of weight[n, e] * expert_e(x[n]), weight[n, e] = 0 unless e is in n's top-k
// (and, with keep, the assignment was kept).
at::Tensor dense_reference(nn::SparseMoe& moe, const at::Tensor& x, const at::Tensor& keep = {}) {
  const auto& s = moe.shape();
  auto probs = at::softmax(moe.gate->forward(x), -1);
  auto [w, idx] = probs.topk(s.top_k, -1);
  if (s.norm_topk_prob) w = w / w.sum(-1, true);
  if (keep.defined()) w = w * keep.view(w.sizes()).to(w.dtype());
  auto dense = at::zeros({x.size(0), s.num_experts}).scatter(1, idx, w);
  auto out = at::zeros_like(x);
  for (int64_t e = 0; e < s.num_experts; ++e) {
    auto gu = at::linear(x, moe.experts->gate_up_proj[e]).chunk(2, -1);
    auto y = at::linear(at::silu(gu[0]) * gu[1], moe.experts->down_proj[e]);
    out = out + y * dense.select(1, e).unsqueeze(-1);
  }
  return out;
}

struct Case {
  nn::MoeShape shape;
  nn::GemmPath path;
};

}  // namespace

TEST(SparseMoe, GroupedGemmsEqualTheDenseReferenceWithGradients) {
  const std::vector<Case> cases = {
      {{64, 4, 2, 32, true}, nn::GemmPath::Grouped},    // at::_grouped_mm
      {{64, 4, 2, 32, true}, nn::GemmPath::PerExpert},  // one at::mm per expert segment
      {{12, 6, 3, 6, false}, nn::GemmPath::Auto},       // unaligned sizes: per-expert fallback
      {{16, 8, 1, 8, true}, nn::GemmPath::Auto},        // top-1, some experts get no token
  };
  for (size_t c = 0; c < cases.size(); ++c) {
    auto s = cases[c].shape;
    auto moe = random_moe(s, 10 + c);
    moe->experts->gemm_path = cases[c].path;
    auto x = at::randn({2, 9, s.hidden_size}).requires_grad_(true);
    auto [out, router] = moe->forward(x);
    ASSERT_EQ(out.sizes(), x.sizes());
    auto x_ref = x.detach().clone().requires_grad_(true);
    auto ref = dense_reference(*moe, x_ref.view({-1, s.hidden_size})).view(x.sizes());
    EXPECT_LT((out - ref).abs().max().item<double>(), 1e-5) << c;

    auto g = at::randn_like(out);
    auto params = moe->parameters();
    std::vector<at::Tensor> inputs = {x};
    inputs.insert(inputs.end(), params.begin(), params.end());
    auto grads = torch::autograd::grad({out}, inputs, {g});
    std::vector<at::Tensor> ref_inputs = {x_ref};
    ref_inputs.insert(ref_inputs.end(), params.begin(), params.end());
    auto ref_grads = torch::autograd::grad({ref}, ref_inputs, {g});
    for (size_t i = 0; i < grads.size(); ++i)
      EXPECT_LT((grads[i] - ref_grads[i]).abs().max().item<double>(), 1e-4) << c << " input " << i;
    EXPECT_EQ(router.tokens_per_expert.sum().item<int64_t>(), 18 * s.top_k);
    EXPECT_EQ(router.dropped, 0);
    EXPECT_EQ(router.router_logits.sizes(), (at::IntArrayRef{18, s.num_experts}));
  }
}

TEST(SparseMoe, CapacityFactorDropsOverflowInTokenOrderAndCountsIt) {
  nn::MoeShape s{16, 4, 2, 8, true, /*capacity_factor=*/0.5};
  auto moe = random_moe(s, 3);
  auto x = at::randn({20, s.hidden_size}).abs();
  {
    // Expert 0 is everyone's first choice (positive inputs, a large positive router row): it overflows.
    at::NoGradGuard no_grad;
    moe->gate->weight[0].fill_(1.0);
  }
  const int64_t capacity = nn::expert_capacity(0.5, 20, 2, 4);
  EXPECT_EQ(capacity, 5);  // ceil(0.5 * 20 * 2 / 4)
  auto [out, router] = moe->forward(x);

  // Expected: per expert, the first `capacity` assignments in token-major order survive.
  auto idx = std::get<1>(at::softmax(moe->gate->forward(x), -1).topk(2, -1));
  auto flat = idx.reshape({-1});
  std::vector<int64_t> seen(4, 0);
  auto keep = at::zeros({flat.size(0)}, at::kBool);
  int64_t dropped = 0;
  for (int64_t i = 0; i < flat.size(0); ++i) {
    auto e = flat[i].item<int64_t>();
    if (seen[e]++ < capacity) keep[i] = true;
    else ++dropped;
  }
  ASSERT_GT(dropped, 0);
  EXPECT_EQ(router.dropped, dropped);
  EXPECT_EQ(router.tokens_per_expert.sum().item<int64_t>(), 40);  // counted before dropping
  EXPECT_LT((out - dense_reference(*moe, x, keep)).abs().max().item<double>(), 1e-5);

  // Dropless again: nothing dropped, the dense reference holds.
  moe->set_capacity_factor(0.0);
  auto full = moe->forward(x);
  EXPECT_EQ(full.router.dropped, 0);
  EXPECT_LT((full.hidden - dense_reference(*moe, x)).abs().max().item<double>(), 1e-5);
}

TEST(TokenDispatcher, LocalDispatchGroupsRowsByExpertAndCombineInvertsIt) {
  auto hidden = at::arange(5, at::kFloat).unsqueeze(1).repeat({1, 3});  // row n = n
  auto ids = at::tensor({2, 0, 1, 2, 0, 1, 3, 2, 1, 0}, at::kLong).view({5, 2});
  auto weights = at::full({5, 2}, 0.5);
  auto d = nn::local_dispatcher()->dispatch(hidden, ids, weights, {4, 0.0});
  EXPECT_EQ(d.rows_per_expert, (std::vector<int64_t>{3, 3, 3, 1}));
  // expert 0: tokens 0, 2, 4; expert 1: 1, 2, 4; expert 2: 0, 1, 3; expert 3: token 3
  EXPECT_TRUE(at::equal(d.token_index, at::tensor({0, 2, 4, 1, 2, 4, 0, 1, 3, 3}, at::kLong)));
  EXPECT_TRUE(at::equal(nn::local_dispatcher()->combine(d.rows, d), hidden));  // 0.5 + 0.5 of itself
  EXPECT_THAT([&] { nn::local_dispatcher()->dispatch(hidden, ids, weights, {3, 0.0}); },
              ThrowsMessage<Error>(StrEq("expert ids must lie in [0, 3), got up to 3")));
}

TEST(LoadBalancingLoss, IsNumExpertsTimesFractionTimesProbability) {
  at::manual_seed(5);
  std::vector<at::Tensor> logits = {at::randn({7, 4}), at::randn({5, 4})};
  auto loss = nn::load_balancing_loss(logits, 4, 2).item<double>();
  auto all = at::cat(logits);
  auto probs = at::softmax(all, -1);
  auto idx = std::get<1>(probs.topk(2, -1));
  double expected = 0.0;
  for (int64_t e = 0; e < 4; ++e) {
    const double fraction = idx.eq(e).sum().item<double>() / 12.0;
    expected += fraction * probs.select(1, e).mean().item<double>();
  }
  EXPECT_NEAR(loss, 4 * expected, 1e-6);
  // Perfectly balanced uniform routing gives top_k.
  EXPECT_NEAR(nn::load_balancing_loss({at::zeros({8, 4})}, 4, 2).item<double>(), 2.0, 1e-6);
}

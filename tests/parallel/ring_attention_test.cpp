// Context parallelism: head-tail load-balanced sharding, ring attention against local causal
// attention on the full sequence (outputs, lse, dQ/dK/dV) for cp 2 to 4, GQA, head_dim not a
// power of two and both K/V strategies, the bytes it sends, a Llama under cp, and bad inputs.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "dist/collectives.h"
#include "nn/causal_lm_loss.h"
#include "parallel/context_parallel.h"
#include "parallel/ulysses.h"
#include "support/attention_reference.h"
#include "support/llama_configs.h"
#include "support/run_ranks.h"
#include "util/check.h"

using namespace meshtrain;
using namespace meshtrain::testing;

namespace {

dist::MeshSizes cp_sizes(int64_t cp) { return meshtrain::testing::sizes(1, 1, cp); }

}  // namespace

TEST(RingSharding, HeadTailChunksPositionsAndInverse) {
  // T = 8, cp = 2: order [0,1,6,7 | 2,3,4,5], as torch's load balancer.
  EXPECT_EQ(parallel::load_balanced_order(8, 2), (std::vector<int64_t>{0, 1, 6, 7, 2, 3, 4, 5}));
  EXPECT_EQ(parallel::load_balanced_positions(16, 4, 1), (std::vector<int64_t>{2, 3, 12, 13}));
  EXPECT_EQ(parallel::load_balanced_positions(5, 1, 0), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  auto x = at::arange(2 * 24 * 3).view({2, 24, 3});
  for (int64_t cp : {1, 2, 3, 4}) {
    std::vector<at::Tensor> shards;
    for (int64_t r = 0; r < cp; ++r) {
      shards.push_back(parallel::shard_load_balanced(x, cp, r, 1));
      auto pos = parallel::load_balanced_position_ids(2, 24, cp, r);
      EXPECT_EQ(pos.sizes(), (std::vector<int64_t>{2, 24 / cp}));
      EXPECT_TRUE(at::equal(shards.back().select(2, 0).div(3, "floor") % 24, pos));
    }
    EXPECT_TRUE(at::equal(parallel::unshard_load_balanced(shards, 1), x)) << "cp " << cp;
  }
  run_ranks(cp_sizes(3), [&](std::shared_ptr<dist::DeviceMesh> mesh) {
    auto& g = mesh->group(MeshDim::Cp);
    auto shard = parallel::shard_load_balanced(x, 3, g.rank(), 1);
    EXPECT_TRUE(at::equal(parallel::gather_load_balanced(shard, g, 1), x));
  });
}

TEST(RingAttention, EqualsLocalAttentionOutputsAndGradients) {
  struct Case {
    int cp;
    int64_t H, Hkv, d;
  };
  // GQA 4/2 and 6/2, head_dim 12 and 20; chunks of 3 rows (T = 6·cp).
  for (auto c : {Case{2, 4, 2, 12}, Case{4, 6, 2, 20}, Case{3, 4, 4, 12}, Case{4, 4, 2, 12}, Case{2, 6, 2, 20}}) {
    const int64_t B = 2, T = 6 * c.cp;
    auto ref = serial_attention(B, c.H, c.Hkv, T, c.d, 7 + c.cp);
    for (auto strategy : {parallel::CpCommStrategy::Ring, parallel::CpCommStrategy::AllGather}) {
      SCOPED_TRACE(::testing::Message() << "cp " << c.cp << " H " << c.H << " Hkv " << c.Hkv << " d " << c.d << " "
                                      << parallel::cp_comm_strategy_name(strategy));
      run_ranks(cp_sizes(c.cp), [&](std::shared_ptr<dist::DeviceMesh> mesh) {
        auto& g = mesh->group(MeshDim::Cp);
        auto shard = [&](const at::Tensor& t) { return parallel::shard_load_balanced(t, c.cp, g.rank(), 2); };
        auto q = shard(ref.q).clone().requires_grad_();
        auto k = shard(ref.k).clone().requires_grad_();
        auto v = shard(ref.v).clone().requires_grad_();
        parallel::RingAttention core(g, strategy);
        auto res = core.forward(q, k, v, ref.scale);
        expect_close(res.lse, shard(ref.lse), "lse");
        expect_close(parallel::gather_load_balanced(res.out.detach(), g, 2), ref.out, "out");
        (res.out * shard(ref.w)).sum().backward();
        expect_close(parallel::gather_load_balanced(q.grad(), g, 2), ref.dq, "dq");
        expect_close(parallel::gather_load_balanced(k.grad(), g, 2), ref.dk, "dk");
        expect_close(parallel::gather_load_balanced(v.grad(), g, 2), ref.dv, "dv");
      });
    }
  }
}

TEST(RingAttention, Bf16InputsMergeInFp32) {
  // bf16 q/k/v: blocks run in bf16, the merge and the gradient accumulation in fp32; the result
  // is close to the fp32 reference within bf16's precision, and lse stays fp32.
  const int64_t cp = 2;
  auto ref = serial_attention(2, 4, 2, 12, 12, 21);
  run_ranks(cp_sizes(cp), [&](std::shared_ptr<dist::DeviceMesh> mesh) {
    auto& g = mesh->group(MeshDim::Cp);
    auto shard = [&](const at::Tensor& t) { return parallel::shard_load_balanced(t, cp, g.rank(), 2); };
    auto q = shard(ref.q).to(at::kBFloat16).requires_grad_();
    auto k = shard(ref.k).to(at::kBFloat16).requires_grad_();
    auto v = shard(ref.v).to(at::kBFloat16).requires_grad_();
    auto res = parallel::RingAttention(g).forward(q, k, v, ref.scale);
    EXPECT_EQ(res.out.scalar_type(), at::kBFloat16);
    EXPECT_EQ(res.lse.scalar_type(), at::kFloat);
    (res.out.to(at::kFloat) * shard(ref.w)).sum().backward();
    auto near = [&](const at::Tensor& got, const at::Tensor& want, const char* what) {
      EXPECT_TRUE(at::allclose(got.to(at::kFloat), shard(want), 5e-2, 5e-2))
          << what << ": max difference " << (got.to(at::kFloat) - shard(want)).abs().max().item<double>();
    };
    near(res.out, ref.out, "out");
    near(res.lse, ref.lse, "lse");
    near(q.grad(), ref.dq, "dq");
    near(k.grad(), ref.dk, "dk");
    near(v.grad(), ref.dv, "dv");
  });
}

TEST(RingAttention, SendsCpMinusOneOverCpOfKeysAndValues) {
  // Forward: each rank receives every other rank's K/V shard once, (cp−1)/cp of the full K and
  // V. The ring is symmetric (every rank sends what it receives), so the send counters show it.
  // Backward, ring: K/V again plus the fp32 dK/dV, which make cp hops (the last brings them
  // home); all-gather: K/V again plus a reduce-scatter of the fp32 dK/dV.
  const int64_t cp = 4, B = 1, H = 4, Hkv = 2, T = 32, d = 12;
  auto ref = serial_attention(B, H, Hkv, T, d, 3);
  const uint64_t full_kv = 2 * static_cast<uint64_t>(ref.k.numel()) * sizeof(float);
  const uint64_t local_kv = full_kv / cp;
  for (auto strategy : {parallel::CpCommStrategy::Ring, parallel::CpCommStrategy::AllGather}) {
    run_ranks(cp_sizes(cp), [&](std::shared_ptr<dist::DeviceMesh> mesh) {
      auto& g = mesh->group(MeshDim::Cp);
      auto shard = [&](const at::Tensor& t) { return parallel::shard_load_balanced(t, cp, g.rank(), 2); };
      auto q = shard(ref.q).requires_grad_(), k = shard(ref.k).requires_grad_(), v = shard(ref.v).requires_grad_();
      parallel::RingAttention core(g, strategy);
      g.reset_bytes_sent();
      auto res = core.forward(q, k, v, ref.scale);
      const uint64_t forward = g.bytes_sent();
      EXPECT_EQ(forward, (cp - 1) * local_kv);
      EXPECT_EQ(forward * cp, (cp - 1) * full_kv);
      g.reset_bytes_sent();
      (res.out * shard(ref.w)).sum().backward();
      const uint64_t backward = g.bytes_sent();
      EXPECT_EQ(backward, strategy == parallel::CpCommStrategy::Ring ? (2 * cp - 1) * local_kv : 2 * (cp - 1) * local_kv);
      if (g.rank() == 0)
        std::cout << "cp " << cp << " " << parallel::cp_comm_strategy_name(strategy) << ": full K+V " << full_kv
                  << " B, sent per rank forward " << forward << " B, backward " << backward << " B\n";
    });
  }
}

TEST(RingAttention, LlamaUnderContextParallelEqualsSerial) {
  auto config = config_with(4, 2, 12);
  const int64_t B = 2, T = 16;
  at::manual_seed(5);
  auto ids = at::randint(0, config.vocab_size, {B, T});
  auto serial = std::make_shared<models::LlamaForCausalLM>(config);
  serial->init_weights(11);
  auto logits = serial->forward(ids);
  auto w = at::randn_like(logits);
  (logits * w).sum().backward();
  // Labels are shifted on the full sequence, then sharded like the inputs.
  auto targets = nn::shift_labels(ids);
  const double loss_sum = nn::cross_entropy_sum(logits.detach(), targets).item<double>();
  for (auto [cp, strategy] : {std::pair{2, parallel::CpCommStrategy::Ring}, {4, parallel::CpCommStrategy::AllGather}}) {
    run_ranks(cp_sizes(cp), [&](std::shared_ptr<dist::DeviceMesh> mesh) {
      const int64_t r = mesh->coordinate(MeshDim::Cp);
      auto model = std::make_shared<models::LlamaForCausalLM>(config);
      model->init_weights(11);
      parallel::apply_sequence_sharded_attention(*model, mesh->group(MeshDim::Cp), mesh->group(MeshDim::Sp), strategy);
      auto out = model->forward(parallel::shard_load_balanced(ids, cp, r, 1),
                                parallel::load_balanced_position_ids(B, T, cp, r));
      expect_close(out, parallel::shard_load_balanced(logits, cp, r, 1), "logits");
      auto local_sum = nn::cross_entropy_sum(out.detach(), parallel::shard_load_balanced(targets, cp, r, 1));
      dist::all_reduce_(mesh->group(MeshDim::Cp), local_sum);
      EXPECT_NEAR(local_sum.item<double>(), loss_sum, 1e-4 * std::abs(loss_sum));
      (out * parallel::shard_load_balanced(w, cp, r, 1)).sum().backward();
      auto want = serial->named_params();
      auto got = model->named_params();
      for (size_t i = 0; i < got.size(); ++i) {
        auto grad = got[i].second.grad().clone();
        dist::all_reduce_(mesh->group(MeshDim::Cp), grad);  // each rank holds its tokens' share
        expect_close(grad, want[i].second.grad(), got[i].first);
      }
    });
  }
}

TEST(RingAttention, RejectsBadInputs) {
  auto x = at::zeros({2, 10});
  expect_error([&] { parallel::shard_load_balanced(x, 2, 0, 1); },
               "sequence length T=10 is not divisible by 2*cp=4 (cp=2)");
  expect_error([&] { parallel::load_balanced_position_ids(1, 12, 4, 0); },
               "sequence length T=12 is not divisible by 2*cp=8 (cp=4)");
  try {
    parallel::parse_cp_comm_strategy("ring");
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_EQ(std::string(e.what()), "Context Parallel does not support using ring for kv shards rotation");
  }
  EXPECT_EQ(parallel::parse_cp_comm_strategy("alltoall"), parallel::CpCommStrategy::Ring);
  EXPECT_EQ(parallel::parse_cp_comm_strategy("allgather"), parallel::CpCommStrategy::AllGather);

  // Masks: none, 2-D padding, lower-triangular 0/1 and additive masks pass; a full mask fails.
  EXPECT_NO_THROW(parallel::check_context_parallel_mask({}));
  EXPECT_NO_THROW(parallel::check_context_parallel_mask(at::ones({2, 6})));
  auto lower = at::ones({6, 6}).tril();
  EXPECT_NO_THROW(parallel::check_context_parallel_mask(lower.expand({2, 1, 6, 6})));
  EXPECT_NO_THROW(parallel::check_context_parallel_mask(at::full({6, 6}, -1e9).triu(1).expand({2, 6, 6})));
  expect_error([&] { parallel::check_context_parallel_mask(at::ones({2, 1, 6, 6})); },
               "Context parallelism only supports causal attention masks. The provided attention_mask is not causal. "
               "Please ensure your data uses causal masking (lower triangular) or remove the attention_mask to use "
               "the model's default causal masking.");
  expect_error([&] { parallel::check_context_parallel_causal(false); }, "Load balancing requires `is_causal=True`.");

  run_ranks(cp_sizes(2), [&](std::shared_ptr<dist::DeviceMesh> mesh) {
    parallel::RingAttention core(mesh->group(MeshDim::Cp));
    auto q = at::randn({1, 2, 3, 4});
    expect_error([&] { core.forward(q, q, q, 0.5); }, "its length T/cp must be even; got 3 (cp=2)");
    expect_error([&] { core.forward(at::randn({1, 2, 4, 4}), at::randn({1, 2, 2, 4}), at::randn({1, 2, 2, 4}), 0.5); },
                 "is_causal requires the same query and context sequence lengths");
  });
}

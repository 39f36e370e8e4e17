// Ulysses sequence parallelism: the head/sequence all-to-all around local attention against
// attention on the full sequence (outputs, lse, gradients) for sp 2 and 4, kv heads split or
// replicated; cp 2 × sp 2 with ring attention inside; a Llama under both; the head and length
// rules with upstream's messages.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "dist/collectives.h"
#include "nn/causal_lm_loss.h"
#include "parallel/ulysses.h"
#include "support/attention_reference.h"
#include "support/llama_configs.h"
#include "support/run_ranks.h"
#include "support/sharded_core_check.h"
#include "util/check.h"

using namespace meshtrain;
using namespace meshtrain::testing;

TEST(Ulysses, EqualsLocalAttentionOutputsAndGradients) {
  struct Case {
    int sp;
    int64_t H, Hkv, d;
  };
  // kv heads split (4/2 over 2, 8/4 over 4, 6/2 over 2) or replicated (4/2 over 4, 4/1 over 4).
  for (auto c : {Case{2, 4, 2, 12}, Case{4, 8, 4, 20}, Case{2, 6, 2, 20}, Case{4, 4, 2, 12}, Case{4, 4, 1, 12}}) {
    SCOPED_TRACE(::testing::Message() << "sp " << c.sp << " H " << c.H << " Hkv " << c.Hkv << " d " << c.d);
    auto ref = serial_attention(2, c.H, c.Hkv, 12, c.d, 3 + c.sp);
    run_ranks(meshtrain::testing::sizes(1, 1, 1, c.sp), [&](std::shared_ptr<dist::DeviceMesh> mesh) {
      parallel::UlyssesAttention core(mesh->group(MeshDim::Sp));
      check_core(core, ref, *mesh);
    });
  }
}

TEST(Ulysses, WithRingAttentionInsideCp2Sp2) {
  // The sequence is load-balanced over cp (T = 16: chunks of 4), then split contiguously over sp.
  auto ref = serial_attention(2, 4, 2, 16, 12, 9);
  for (auto strategy : {parallel::CpCommStrategy::Ring, parallel::CpCommStrategy::AllGather}) {
    SCOPED_TRACE(parallel::cp_comm_strategy_name(strategy));
    run_ranks(meshtrain::testing::sizes(1, 1, 2, 2), [&](std::shared_ptr<dist::DeviceMesh> mesh) {
      parallel::UlyssesAttention core(mesh->group(MeshDim::Sp),
                                      std::make_shared<parallel::RingAttention>(mesh->group(MeshDim::Cp), strategy));
      check_core(core, ref, *mesh);
    });
  }
}

TEST(Ulysses, LlamaUnderSpAndCpTimesSpEqualsSerial) {
  auto config = config_with(4, 2, 12);
  const int64_t B = 2, T = 16;
  at::manual_seed(5);
  auto ids = at::randint(0, config.vocab_size, {B, T});
  auto serial = std::make_shared<models::LlamaForCausalLM>(config);
  serial->init_weights(11);
  auto logits = serial->forward(ids);
  auto w = at::randn_like(logits);
  (logits * w).sum().backward();
  auto targets = nn::shift_labels(ids);  // shifted on the full sequence, then sharded
  const double loss_sum = nn::cross_entropy_sum(logits.detach(), targets).item<double>();
  for (auto sizes : {meshtrain::testing::sizes(1, 1, 1, 2), meshtrain::testing::sizes(1, 1, 2, 2)}) {
    run_ranks(sizes, [&](std::shared_ptr<dist::DeviceMesh> mesh) {
      auto model = std::make_shared<models::LlamaForCausalLM>(config);
      model->init_weights(11);
      parallel::apply_sequence_sharded_attention(*model, mesh->group(MeshDim::Cp), mesh->group(MeshDim::Sp));
      auto out = model->forward(parallel::shard_sequence(ids, *mesh), parallel::sequence_position_ids(B, T, *mesh));
      expect_close(out, parallel::shard_sequence(logits, *mesh), "logits");
      auto local_sum = nn::cross_entropy_sum(out.detach(), parallel::shard_sequence(targets, *mesh));
      dist::all_reduce_(mesh->group(MeshDim::Cp), local_sum);
      dist::all_reduce_(mesh->group(MeshDim::Sp), local_sum);
      EXPECT_NEAR(local_sum.item<double>(), loss_sum, 1e-4 * std::abs(loss_sum));
      (out * parallel::shard_sequence(w, *mesh)).sum().backward();
      auto want = serial->named_params();
      auto got = model->named_params();
      for (size_t i = 0; i < got.size(); ++i) {
        auto grad = got[i].second.grad().clone();
        dist::all_reduce_(mesh->group(MeshDim::Cp), grad);  // each rank holds its tokens' share
        dist::all_reduce_(mesh->group(MeshDim::Sp), grad);
        expect_close(grad, want[i].second.grad(), got[i].first);
      }
    });
  }
}

TEST(Ulysses, RejectsBadHeadCountsAndLengths) {
  expect_error([] { parallel::check_ulysses_heads(6, 2, 4); }, "Attention head count 6 is not divisible by SP size 4");
  expect_error([] { parallel::check_ulysses_heads(6, 3, 2); },
               "KV attention head count 3 is not divisible by SP size 2 or vice versa");
  EXPECT_NO_THROW(parallel::check_ulysses_heads(8, 2, 4));
  EXPECT_NO_THROW(parallel::check_ulysses_heads(8, 8, 4));
  expect_error([] { parallel::shard_contiguous(at::zeros({2, 10}), 4, 0, 1); },
               "batch's seqlen=10 isn't divisible by sp-size=4");
  run_ranks(meshtrain::testing::sizes(1, 1, 1, 2), [&](std::shared_ptr<dist::DeviceMesh> mesh) {
    parallel::UlyssesAttention core(mesh->group(MeshDim::Sp));
    auto q = at::randn({1, 3, 4, 8}), k = at::randn({1, 3, 4, 8});
    expect_error([&] { core.forward(q, k, k, 0.5); }, "Attention head count 3 is not divisible by SP size 2");
    models::LlamaForCausalLM model(config_with(3, 3, 8));
    expect_error([&] { parallel::apply_sequence_sharded_attention(model, mesh->group(MeshDim::Cp), mesh->group(MeshDim::Sp)); },
                 "Attention head count 3 is not divisible by SP size 2");
  });
  run_ranks(meshtrain::testing::sizes(1, 1, 2, 2), [&](std::shared_ptr<dist::DeviceMesh> mesh) {
    expect_error([&] { parallel::shard_sequence(at::zeros({1, 10}), *mesh); },
                 "sequence length T=10 is not divisible by 2*cp=4");
  });
}

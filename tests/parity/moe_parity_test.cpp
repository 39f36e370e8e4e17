// An MoE model (fused experts, router, auxiliary loss) under DDP and FSDP: the load-balancing
// loss is that of the global micro-batch (assignments and probabilities summed over dp), so
// the gradients equal the serial run on the whole batch, however unevenly the rows are split.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nn/causal_lm_loss.h"
#include "support/run_ranks.h"
#include "train/trainer.h"

using namespace meshtrain;
using meshtrain::testing::run_ranks;
using meshtrain::testing::sizes;

TEST(MoeParity, DdpAndFsdpGradientsEqualSerialWithTheAuxLoss) {
  auto config = models::LlamaConfig::load(std::filesystem::path(MESHTRAIN_SOURCE_DIR) / "tests/golden/qwen3-moe");
  ASSERT_TRUE(config.moe && config.moe->output_router_logits);
  at::manual_seed(4);
  auto ids = at::randint(0, config.vocab_size, {4, 12});
  auto targets = nn::shift_labels(ids);
  const int64_t count = nn::count_targets(targets);
  // Rank 0 takes rows 0-2, rank 1 row 3.
  auto micro = [&](int r) {
    auto rows = r == 0 ? at::arange(0, 3, at::kLong) : at::arange(3, 4, at::kLong);
    return parallel::MicroBatch{ids.index_select(0, rows), targets.index_select(0, rows)};
  };

  auto serial = std::make_shared<models::LlamaForCausalLM>(config);
  serial->init_weights(5);
  auto solo = std::make_shared<parallel::ParallelModel>(serial, std::make_shared<dist::DeviceMesh>(dist::MeshSizes{}, 0),
                                                        parallel::ParallelOptions{});
  parallel::step_loss(*solo, {{ids, targets}}, parallel::Pass::ForwardBackward);
  std::map<std::string, at::Tensor> want;
  for (auto& [name, p] : serial->named_params()) want[name] = p.grad();

  for (auto mesh_sizes : {sizes(2, 1), sizes(1, 2)}) {
    run_ranks(mesh_sizes, [&](std::shared_ptr<dist::DeviceMesh> mesh) {
      auto model = std::make_shared<models::LlamaForCausalLM>(config);
      model->init_weights(5);
      auto pm = std::make_shared<parallel::ParallelModel>(model, mesh, parallel::ParallelOptions{});
      const auto step = parallel::step_loss(*pm, {micro(mesh->rank())}, parallel::Pass::ForwardBackward);
      EXPECT_EQ(step.targets, count);
      for (auto& [name, p] : model->named_params()) {
        const auto& place = model->placement(name);
        auto expected = want.at(name).narrow(0, place.offset[0], p.size(0));
        EXPECT_TRUE(at::allclose(p.grad(), expected, 1e-4, 1e-6)) << name << " on rank " << mesh->rank();
      }
    });
  }
}

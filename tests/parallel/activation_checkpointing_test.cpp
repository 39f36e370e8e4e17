// Activation checkpointing on one rank: full and every-2nd-layer checkpointing run each chosen
// layer twice (forward, recomputation in backward) and give the loss, the aux loss and every
// gradient of the run without it, for a dense Llama and for Mixtral (whose aux loss reaches the
// router through the checkpoint). The layouts are in tests/parity/loss_parity_test.cpp.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>

#include "dist/device_mesh.h"
#include "nn/causal_lm_loss.h"
#include "parallel/parallelize.h"
#include "parallel/step_loss.h"
#include "util/check.h"

using namespace meshtrain;

namespace {

// Counts the runs of each layer: installed first, it sits inside the checkpointing runner.
struct CountingRunner : nn::LayerRunner {
  nn::LayerOutput run(int64_t index, const nn::LayerForward& inner, const at::Tensor& hidden) override {
    ++runs[index];
    return inner(hidden);
  }
  std::map<int64_t, int> runs;
};

struct Result {
  parallel::StepLoss loss;
  std::map<std::string, at::Tensor> grads;
  std::map<int64_t, int> runs;
};

Result train_step(const models::LlamaConfig& config, parallel::AcMode mode, int64_t every) {
  auto model = std::make_shared<models::LlamaForCausalLM>(config);
  model->init_weights(7);
  auto counter = std::make_shared<CountingRunner>();
  model->model->runners.wrap(counter);
  parallel::ParallelOptions options;
  options.ac_mode = mode;
  options.ac_every = every;
  parallel::ParallelModel pm(model, std::make_shared<dist::DeviceMesh>(dist::MeshSizes{}, 0), options);
  at::manual_seed(1);
  auto ids = at::randint(0, config.vocab_size, {2, 16});
  Result r;
  r.loss = parallel::step_loss(pm, {{ids, nn::shift_labels(ids)}}, parallel::Pass::ForwardBackward);
  for (auto& [name, p] : model->named_params()) r.grads[name] = p.grad();
  r.runs = counter->runs;
  return r;
}

}  // namespace

TEST(ActivationCheckpointing, RecomputesTheChosenLayersAndChangesNoLossOrGradient) {
  for (auto name : {"llama-small", "mixtral-tiny"}) {
    auto config = models::LlamaConfig::load(std::filesystem::path(MESHTRAIN_SOURCE_DIR) / "configs" / name);
    const auto plain = train_step(config, parallel::AcMode::None, 1);
    for (auto [mode, every] : {std::pair{parallel::AcMode::Full, 1}, {parallel::AcMode::Selective, 2}}) {
      const auto checkpointed = train_step(config, mode, every);
      for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
        EXPECT_EQ(plain.runs.at(layer), 1);
        EXPECT_EQ(checkpointed.runs.at(layer), layer % every == 0 ? 2 : 1) << name << " layer " << layer;
      }
      EXPECT_NEAR(checkpointed.loss.loss_sum, plain.loss.loss_sum, 1e-6 * plain.loss.loss_sum) << name;
      if (config.moe) {
        EXPECT_NEAR(checkpointed.loss.moe->aux_loss(), plain.loss.moe->aux_loss(), 1e-6) << name;
      }
      for (auto& [param, grad] : plain.grads) {
        const auto& got = checkpointed.grads.at(param);
        ASSERT_TRUE(got.defined()) << name << " " << param;
        EXPECT_LE((got - grad).abs().max().item<double>(), 1e-6 * grad.abs().max().item<double>() + 1e-9)
            << name << " " << param << " every " << every;
      }
    }
  }
}

TEST(ActivationCheckpointing, ForwardWithoutGradientsRunsEachLayerOnce) {
  auto config = models::LlamaConfig::load(std::filesystem::path(MESHTRAIN_SOURCE_DIR) / "configs/llama-tiny");
  auto model = std::make_shared<models::LlamaForCausalLM>(config);
  auto counter = std::make_shared<CountingRunner>();
  model->model->runners.wrap(counter);
  parallel::ParallelOptions options;
  options.ac_mode = parallel::AcMode::Full;
  parallel::ParallelModel pm(model, std::make_shared<dist::DeviceMesh>(dist::MeshSizes{}, 0), options);
  at::NoGradGuard no_grad;
  pm.forward(at::zeros({1, 8}, at::kLong));
  EXPECT_EQ(counter->runs, (std::map<int64_t, int>{{0, 1}, {1, 1}}));
  EXPECT_THAT([] { parallel::parse_ac_mode("sometimes"); },
              ::testing::ThrowsMessage<UsageError>(
                  ::testing::StrEq("--ac_mode must be none, full or selective, got 'sometimes'")));
}

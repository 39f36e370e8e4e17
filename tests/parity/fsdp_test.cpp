// FSDP's sharding: each rank holds its torch.chunk block of every parameter (so gradients and
// optimizer state shrink as 1/dp_shard), including empty tail shards, gradients equal the
// serial ones on the same global batch, and a layer's gathered weights are freed after its
// forward unless reshard_after_forward is off.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "dist/comm_autograd.h"
#include "nn/causal_lm_loss.h"
#include "support/run_ranks.h"
#include "train/trainer.h"

using namespace meshtrain;
using meshtrain::testing::run_ranks;
using meshtrain::testing::sizes;

namespace {

models::LlamaConfig golden_config() {
  return models::LlamaConfig::load(std::filesystem::path(MESHTRAIN_SOURCE_DIR) / "tests/golden/llama-tied-llama3");
}

}  // namespace

TEST(Fsdp, ShardsAreChunksAndGradientsEqualSerial) {
  auto config = golden_config();  // tied embeddings, biases; norm weights of 48 rows
  at::manual_seed(3);
  auto ids = at::randint(0, config.vocab_size, {4, 12});
  auto targets = nn::shift_labels(ids);
  const int64_t count = nn::count_targets(targets);

  auto serial = std::make_shared<models::LlamaForCausalLM>(config);
  serial->init_weights(11);
  auto solo = std::make_shared<parallel::ParallelModel>(serial, std::make_shared<dist::DeviceMesh>(dist::MeshSizes{}, 0),
                                                        parallel::ParallelOptions{});
  parallel::step_loss(*solo, {{ids, targets}}, parallel::Pass::ForwardBackward);
  std::map<std::string, at::Tensor> want;
  for (auto& [name, p] : serial->named_params()) want[name] = p.grad();

  for (int n : {3, 5}) {  // 5 ranks: k/v bias (32 rows) splits 7,7,7,7,4; q bias (64) 13 x4, 12
    run_ranks(sizes(1, n), [&](std::shared_ptr<dist::DeviceMesh> mesh) {
      auto model = std::make_shared<models::LlamaForCausalLM>(config);
      model->init_weights(11);
      auto pm = std::make_shared<parallel::ParallelModel>(model, mesh, parallel::ParallelOptions{});
      const int r = mesh->rank();
      // Each rank takes its rows of the batch (rank r: rows r, r + n, ...), as the trainer does.
      std::vector<int64_t> rows;
      for (int64_t i = r; i < 4; i += n) rows.push_back(i);
      auto index = at::tensor(rows, at::kLong);
      std::vector<parallel::MicroBatch> mine;
      if (!rows.empty()) mine.push_back({ids.index_select(0, index), targets.index_select(0, index)});
      else mine.push_back({ids.narrow(0, 0, 1), at::full({1, 12}, nn::kIgnoreIndex, at::kLong)});
      EXPECT_EQ(parallel::step_loss(*pm, mine, parallel::Pass::ForwardBackward).targets, count);
      for (auto& [name, p] : model->named_params()) {
        const auto& place = model->placement(name);
        auto sizes = dist::chunk_sizes(place.global_shape[0], n);
        ASSERT_EQ(p.size(0), sizes[r]) << name;
        auto expected = want.at(name).narrow(0, place.offset[0], sizes[r]);
        EXPECT_TRUE(at::allclose(p.grad(), expected, 1e-4, 1e-6)) << name << " on rank " << r;
      }
    });
  }
}

TEST(Fsdp, ReshardAfterForwardFreesLayerWeightsAndTheKeepingModeHoldsThem) {
  auto config = golden_config();
  at::manual_seed(3);
  auto ids = at::randint(0, config.vocab_size, {2, 12});
  for (bool reshard : {true, false}) {
    run_ranks(sizes(1, 2), [&](std::shared_ptr<dist::DeviceMesh> mesh) {
      auto model = std::make_shared<models::LlamaForCausalLM>(config);
      model->init_weights(11);
      parallel::ParallelOptions options;
      options.reshard_after_forward = reshard;
      parallel::ParallelModel pm(model, mesh, options);
      auto& layer = *model->model->layers[1]->self_attn->q_proj;  // what layer 1 reads in forward
      const auto full_bytes = static_cast<size_t>(config.num_attention_heads * config.head_dim * config.hidden_size) *
                              sizeof(float);
      auto loss = pm.loss_sum(ids, nn::shift_labels(ids));
      EXPECT_EQ(layer.weight.size(0), config.num_attention_heads * config.head_dim);  // gathered
      EXPECT_EQ(layer.weight.storage().nbytes(), reshard ? 0 : full_bytes) << "reshard " << reshard;
      // The root unit (embedding, final norm) stays gathered until backward either way.
      EXPECT_EQ(model->model->embed_tokens->weight.size(0), config.vocab_size);
      EXPECT_GT(model->model->embed_tokens->weight.storage().nbytes(), 0u);
      pm.prepare_backward(true);
      loss.backward();
      pm.finish_backward();
      EXPECT_TRUE(at::isfinite(model->named_params().front().second.grad()).all().item<bool>());
    });
  }
}

TEST(Fsdp, GathersAroundARunnerInstalledBeforeIt) {
  // A runner installed before FSDP (as activation checkpointing will be) runs inside FSDP's
  // gather: it sees every layer's full weights, and the gradients still equal the serial ones.
  struct WeightsSeen : nn::LayerRunner {
    explicit WeightsSeen(models::LlamaForCausalLM& m) : model(m) {}
    nn::LayerOutput run(int64_t index, const nn::LayerForward& inner, const at::Tensor& hidden) override {
      rows.push_back(model.model->layers[index]->self_attn->q_proj->weight.size(0));
      return inner(hidden);
    }
    models::LlamaForCausalLM& model;
    std::vector<int64_t> rows;
  };
  auto config = golden_config();
  at::manual_seed(3);
  auto ids = at::randint(0, config.vocab_size, {2, 12});
  auto targets = nn::shift_labels(ids);
  auto serial = std::make_shared<models::LlamaForCausalLM>(config);
  serial->init_weights(11);
  auto serial_loss = nn::cross_entropy_sum(serial->forward(ids), targets);
  serial_loss.backward();
  run_ranks(sizes(1, 2), [&](std::shared_ptr<dist::DeviceMesh> mesh) {
    auto model = std::make_shared<models::LlamaForCausalLM>(config);
    model->init_weights(11);
    auto seen = std::make_shared<WeightsSeen>(*model);
    model->model->runners.wrap(seen);
    parallel::ParallelModel pm(model, mesh, parallel::ParallelOptions{});
    EXPECT_EQ(model->model->runners.size(), 2u);
    // Rank r holds its half of the batch.
    auto loss = pm.loss_sum(ids.narrow(0, mesh->rank(), 1), targets.narrow(0, mesh->rank(), 1));
    pm.prepare_backward(true);
    loss.backward();
    pm.finish_backward();
    const int64_t full_rows = config.num_attention_heads * config.head_dim;
    EXPECT_EQ(seen->rows, std::vector<int64_t>(config.num_hidden_layers, full_rows));
    auto want = serial->named_params();
    auto got = model->named_params();
    for (size_t i = 0; i < got.size(); ++i) {
      const auto& place = model->placement(got[i].first);
      auto expected = want[i].second.grad().narrow(0, place.offset[0], got[i].second.size(0));
      EXPECT_TRUE(at::allclose(got[i].second.grad(), expected, 1e-4, 1e-6)) << got[i].first;
    }
  });
}

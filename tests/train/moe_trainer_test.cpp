// Training an MoE model: one micro-batch through step_loss gives HF's loss
// (ce_mean + router_aux_loss_coef * aux) and its gradients; the trainer logs the routing and
// exports the checkpoint in the layout transformers 5 saves.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

#include "data/token_dataset.h"
#include "dist/device_mesh.h"
#include "io/safetensors.h"
#include "models/hf_weights.h"
#include "nn/causal_lm_loss.h"
#include "train/trainer.h"

using namespace meshtrain;
namespace fs = std::filesystem;

namespace {

std::shared_ptr<parallel::ParallelModel> on_one_rank(std::shared_ptr<models::LlamaForCausalLM> m) {
  return std::make_shared<parallel::ParallelModel>(m, std::make_shared<dist::DeviceMesh>(dist::MeshSizes{}, 0),
                                                   parallel::ParallelOptions{});
}

double max_rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item<double>();
}

}  // namespace

TEST(MoeTraining, OneMicroBatchGivesTransformersLossWithAuxAndItsGradients) {
  auto dir = fs::path(MESHTRAIN_SOURCE_DIR) / "tests/golden/mixtral";
  auto model = on_one_rank(models::load_pretrained(dir));
  io::SafetensorsFile golden(dir / "golden.safetensors");
  auto targets = nn::shift_labels(golden.read("labels"));
  const auto step =
      parallel::step_loss(*model, {{golden.read("input_ids"), targets}}, parallel::Pass::ForwardBackward);
  EXPECT_EQ(step.targets, nn::count_targets(targets));
  ASSERT_TRUE(step.moe);
  const auto& stats = *step.moe;
  const double coef = model->model().config().moe->router_aux_loss_coef;
  EXPECT_NEAR(step.mean() + coef * stats.aux_loss(), golden.read("loss").item<double>(), 1e-5);
  EXPECT_NEAR(stats.aux_loss_sum, golden.read("aux_loss").item<double>(), 1e-5);
  EXPECT_EQ(stats.micro_batches, 1);
  ASSERT_EQ(stats.tokens_per_expert.sizes(), (at::IntArrayRef{2, 4}));
  EXPECT_EQ(stats.tokens_per_expert.sum(1).eq(48 * 2).all().item<bool>(), true);  // 48 tokens, top-2
  EXPECT_EQ(stats.dropped, 0);
  std::map<std::string, at::Tensor> params;
  for (auto& [name, p] : model->model().named_params()) params[name] = p;
  for (auto& key : golden.names()) {
    if (!key.starts_with("grad.")) continue;
    EXPECT_LT(max_rel_diff(params.at(key.substr(5)).grad(), golden.read(key)), 1e-4) << key;
  }
}

TEST(MoeTraining, TrainerLogsRoutingAndExportsPerExpertTensors) {
  auto out = fs::temp_directory_path() / ("mt_moe_train_" + std::to_string(::getpid()));
  fs::remove_all(out);
  auto config = models::LlamaConfig::load(fs::path(MESHTRAIN_SOURCE_DIR) / "configs/qwen3-moe-tiny");
  config.moe->capacity_factor = 1.0;
  auto m = std::make_shared<models::LlamaForCausalLM>(config);
  m->init_weights(1);
  auto data = data::open_token_dataset(fs::path(MESHTRAIN_SOURCE_DIR) / "data/corpus.txt");
  train::TrainingArguments args;
  args.per_device_train_batch_size = 2;
  args.gradient_accumulation_steps = 2;
  args.max_steps = 4;
  args.learning_rate = 1e-2;
  args.warmup_steps = 0;
  args.logging_steps = 2;
  args.save_steps = 0;
  args.output_dir = out.string();
  train::Trainer trainer(on_one_rank(m), *data, 16, args);
  trainer.verbose = false;
  trainer.peak_flops = 1e9;
  auto records = trainer.train();
  ASSERT_EQ(records.size(), 4u);
  EXPECT_LT(records.back().loss, records.front().loss);

  std::ifstream metrics(out / "metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(metrics, line)) {
    auto j = nlohmann::json::parse(line);
    ASSERT_TRUE(j.contains("aux_loss") && j.contains("tokens_per_expert") && j.contains("dropped_tokens")) << line;
    EXPECT_GT(j["aux_loss"].get<double>(), 0.0);
    auto counts = j["tokens_per_expert"].get<std::vector<std::vector<int64_t>>>();
    ASSERT_EQ(counts.size(), 1u);  // layer 0 is dense (mlp_only_layers)
    int64_t total = 0;
    for (auto c : counts[0]) total += c;
    EXPECT_EQ(total, 2 * 2 * 2 * 16 * 2);  // 2 steps x 2 micro-batches x 2 rows x 16 tokens x top-2
    // Capacity 1.0 keeps 32 * 2 / 4 = 16 assignments per expert and forward: the busier experts
    // drop, and as no expert gets more than all 32 tokens, at most half the assignments go.
    const int64_t dropped = j["dropped_tokens"];
    EXPECT_GT(dropped, 0) << line;
    EXPECT_LE(dropped, total / 2) << line;
    ++lines;
  }
  EXPECT_EQ(lines, 2);

  io::CheckpointReader saved(out);
  EXPECT_TRUE(saved.contains("model.layers.1.mlp.experts.3.down_proj.weight"));
  EXPECT_TRUE(saved.contains("model.layers.1.mlp.gate.weight"));
  EXPECT_FALSE(saved.contains("model.layers.1.mlp.experts.gate_up_proj"));
  auto reloaded = models::load_pretrained(out);
  auto a = m->named_params(), b = reloaded->named_params();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;
  fs::remove_all(out);
}

// Mixtral and Qwen3-MoE against Hugging Face transformers: golden files written by
// scripts/make_golden_moe.py (per-expert checkpoint, inputs, logits also at shifted positions,
// loss with the router auxiliary loss, every gradient), and both expert checkpoint layouts.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "io/safetensors.h"
#include "models/hf_weights.h"
#include "nn/causal_lm_loss.h"
#include "support/run_command.h"
#include "util/check.h"

using namespace meshtrain;
using meshtrain::testing::hf_logit_diff;
namespace fs = std::filesystem;

namespace {

fs::path golden_dir(const std::string& name) { return fs::path(MESHTRAIN_SOURCE_DIR) / "tests" / "golden" / name; }

double max_rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item<double>();
}

fs::path temp_dir(const std::string& tag) {
  auto p = fs::temp_directory_path() / ("mt_moe_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p;
}

// name -> shape of every tensor of a checkpoint directory
std::map<std::string, std::vector<int64_t>> layout_of(const fs::path& dir) {
  io::CheckpointReader r(dir);
  std::map<std::string, std::vector<int64_t>> out;
  for (auto& n : r.names()) out[n] = r.info(n).shape;
  return out;
}

std::string sci(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

class MoeGolden : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(MoeGolden, LogitsLossWithAuxAndGradientsMatchTransformers) {
  auto dir = golden_dir(GetParam());
  auto model = models::load_pretrained(dir);
  ASSERT_TRUE(model->config().moe);
  EXPECT_EQ(model->config().moe->checkpoint_layout, models::ExpertLayout::PerExpert);
  io::SafetensorsFile golden(dir / "golden.safetensors");
  {
    at::NoGradGuard no_grad;  // positions 40.., as a sequence shard sees them
    auto shifted = model->forward(golden.read("input_ids"), golden.read("offset_position_ids"));
    EXPECT_LT(max_rel_diff(shifted, golden.read("offset_logits")), 1e-5);
  }
  models::Routing routing;
  auto logits = model->forward(golden.read("input_ids"), {}, &routing);
  ASSERT_EQ(routing.size(), static_cast<size_t>(model->config().num_moe_layers()));
  const double logit_diff = max_rel_diff(logits, golden.read("logits"));
  EXPECT_LT(logit_diff, 1e-5);
  RecordProperty("max_rel_logit_diff", sci(logit_diff));

  auto targets = nn::shift_labels(golden.read("labels"));
  auto aux = model->router_aux_loss(routing);
  EXPECT_NEAR(aux.item<double>(), golden.read("aux_loss").item<double>(), 1e-5);
  const auto& moe = *model->config().moe;
  ASSERT_TRUE(moe.output_router_logits);
  auto loss = nn::cross_entropy_sum(logits, targets) / nn::count_targets(targets) + moe.router_aux_loss_coef * aux;
  EXPECT_NEAR(loss.item<double>(), golden.read("loss").item<double>(), 1e-5);
  RecordProperty("loss_diff", sci(std::abs(loss.item<double>() - golden.read("loss").item<double>())));
  RecordProperty("aux_diff", sci(std::abs(aux.item<double>() - golden.read("aux_loss").item<double>())));

  loss.backward();
  // Every parameter's gradient, and no golden gradient of a parameter we lack.
  int checked = 0;
  double worst = 0.0;
  for (auto& [name, p] : model->named_params()) {
    ASSERT_TRUE(golden.contains("grad." + name)) << name;
    const double diff = max_rel_diff(p.grad(), golden.read("grad." + name));
    EXPECT_LT(diff, 1e-4) << name;
    worst = std::max(worst, diff);
    ++checked;
  }
  EXPECT_EQ(checked, std::ranges::count_if(golden.names(), [](auto& n) { return n.starts_with("grad."); }));
  RecordProperty("max_rel_grad_diff", sci(worst));
}

TEST_P(MoeGolden, PerExpertCheckpointSavesUnderTheSameNamesAndShapes) {
  auto src = golden_dir(GetParam());
  auto model = models::load_pretrained(src);
  auto out = temp_dir("per_expert");
  models::save_hf_checkpoint(*model, out);
  EXPECT_EQ(layout_of(out), layout_of(src));
  io::CheckpointReader a(src), b(out);
  for (auto& n : a.names()) EXPECT_TRUE(at::equal(a.read(n), b.read(n))) << n;
  fs::remove_all(out);
}

TEST_P(MoeGolden, FusedCheckpointLoadsAndSavesFusedAndTransformersReadsIt) {
  auto src = golden_dir(GetParam());
  auto config = models::LlamaConfig::load(src);
  config.moe->checkpoint_layout = models::ExpertLayout::Fused;
  auto model = std::make_shared<models::LlamaForCausalLM>(config);
  models::load_hf_weights(*model, io::CheckpointReader(src));
  auto fused = temp_dir("fused");
  models::save_hf_checkpoint(*model, fused, /*max_shard_bytes=*/100000);
  auto names = layout_of(fused);
  const int64_t moe_layer = config.is_moe_layer(0) ? 0 : 1;
  const std::string p = "model.layers." + std::to_string(moe_layer) + ".mlp.";
  const auto& m = *config.moe;
  EXPECT_EQ(names[p + "experts.gate_up_proj"],
            (std::vector<int64_t>{m.num_experts, 2 * m.intermediate_size, config.hidden_size}));
  EXPECT_EQ(names[p + "experts.down_proj"], (std::vector<int64_t>{m.num_experts, config.hidden_size, m.intermediate_size}));
  EXPECT_EQ(names[p + "gate.weight"], (std::vector<int64_t>{m.num_experts, config.hidden_size}));
  for (auto& [n, shape] : names) EXPECT_EQ(n.find(".experts.0."), std::string::npos) << n;

  // Reloaded: the fused layout is detected, remembered and written again under the same names.
  auto reloaded = models::load_pretrained(fused);
  EXPECT_EQ(reloaded->config().moe->checkpoint_layout, models::ExpertLayout::Fused);
  auto a = model->named_params(), b = reloaded->named_params();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;
  auto again = temp_dir("fused_again");
  models::save_hf_checkpoint(*reloaded, again);
  EXPECT_EQ(layout_of(again), names);

  // transformers' default (sdpa) attention against the eager golden: relative to the logits' scale.
  const double diff = hf_logit_diff(fused, src / "golden.safetensors");
  const double scale = io::SafetensorsFile(src / "golden.safetensors").read("logits").abs().max().item<double>();
  EXPECT_LT(diff, 1e-5 * scale);
  RecordProperty("hf_fused_abs_logit_diff", sci(diff));
  fs::remove_all(fused);
  fs::remove_all(again);
}

INSTANTIATE_TEST_SUITE_P(Transformers, MoeGolden, ::testing::Values("mixtral", "qwen3-moe"), [](const auto& info) {
  std::string n = info.param;
  std::replace(n.begin(), n.end(), '-', '_');
  return n;
});

TEST(MoeConfig, ReadsMixtralAndQwen3MoeFields) {
  auto mix = models::LlamaConfig::load(golden_dir("mixtral"));
  EXPECT_EQ(mix.model_type, "mixtral");
  EXPECT_EQ(mix.moe->num_experts, 4);
  EXPECT_EQ(mix.moe->intermediate_size, 32);
  EXPECT_TRUE(mix.moe->norm_topk_prob);
  EXPECT_FALSE(mix.qk_norm);
  EXPECT_EQ(mix.head_dim, 16);  // head_dim null: hidden / heads
  EXPECT_TRUE(mix.is_moe_layer(0) && mix.is_moe_layer(1));
  EXPECT_EQ(mix.to_json()["architectures"][0], "MixtralForCausalLM");

  auto qwen = models::LlamaConfig::load(golden_dir("qwen3-moe"));
  EXPECT_EQ(qwen.moe->num_experts, 4);  // written as num_local_experts by transformers 5
  EXPECT_FALSE(qwen.moe->norm_topk_prob);
  EXPECT_TRUE(qwen.qk_norm);
  EXPECT_FALSE(qwen.is_moe_layer(0));  // decoder_sparse_step 2
  EXPECT_TRUE(qwen.is_moe_layer(1));
  EXPECT_EQ(qwen.to_json()["architectures"][0], "Qwen3MoeForCausalLM");

  auto j = qwen.raw;
  j["decoder_sparse_step"] = 1;
  j["mlp_only_layers"] = {0};
  j.erase("num_local_experts");
  j["num_experts"] = 6;
  auto c = models::LlamaConfig::from_json(j, "cfg");
  EXPECT_EQ(c.moe->num_experts, 6);
  EXPECT_FALSE(c.is_moe_layer(0));
  EXPECT_TRUE(c.is_moe_layer(1));
  j["num_experts"] = 0;
  EXPECT_EQ(models::LlamaConfig::from_json(j, "cfg").num_moe_layers(), 0);
}

TEST(MoeConfig, RejectsWhatTrainingCannotMatch) {
  auto expect_error = [](nlohmann::json j, const std::string& phrase) {
    try {
      models::LlamaConfig::from_json(j, "cfg");
      ADD_FAILURE() << "expected an error containing: " << phrase;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(phrase), std::string::npos) << e.what();
    }
  };
  auto mix = models::LlamaConfig::load(golden_dir("mixtral")).raw;
  auto j = mix;
  j["router_jitter_noise"] = 0.1;
  expect_error(j, "router_jitter_noise 0.1 is not supported");
  j = mix;
  j["sliding_window"] = 4096;
  expect_error(j, "sliding_window 4096 is not supported");
  j = mix;
  j["num_experts_per_tok"] = 5;
  expect_error(j, "num_experts_per_tok must be in [1, 4], got 5");
  j = mix;
  j["capacity_factor"] = -1.0;
  expect_error(j, "capacity_factor must be >= 0");
  auto qwen = models::LlamaConfig::load(golden_dir("qwen3-moe")).raw;
  j = qwen;
  j["use_sliding_window"] = true;
  expect_error(j, "use_sliding_window true is not supported");
  j = qwen;
  j["decoder_sparse_step"] = 0;
  expect_error(j, "decoder_sparse_step must be positive");
}

TEST(MoeConfig, ParameterCountIsWhatTheModelHoldsAndFlopsCountActiveExperts) {
  for (auto name : {"mixtral", "qwen3-moe"}) {
    auto c = models::LlamaConfig::load(golden_dir(name));
    models::LlamaForCausalLM model(c);
    int64_t held = 0;
    for (auto& [n, p] : model.named_params()) held += p.numel();
    EXPECT_EQ(c.num_parameters(), held) << name;
    // Two of four experts active: fewer FLOPs than the same model with every expert active.
    auto all = c;
    all.moe->num_experts_per_tok = all.moe->num_experts;
    const double per_expert = 6.0 * 3 * c.hidden_size * c.moe->intermediate_size * c.num_moe_layers();
    EXPECT_NEAR(all.flops_per_token(64) - c.flops_per_token(64), 2 * per_expert, 1e-6 * per_expert) << name;
  }
}

TEST(MoeInit, ExpertsAndRouterAreDrawnNormalAndQkNormsAreOnes) {
  auto model = models::LlamaForCausalLM(models::LlamaConfig::load(golden_dir("qwen3-moe")));
  model.init_weights(3);
  auto& moe = *model.model->layers[1]->moe;
  EXPECT_NEAR(moe.experts->gate_up_proj.std().item<double>(), 0.02, 0.004);
  EXPECT_NEAR(moe.gate->weight.std().item<double>(), 0.02, 0.006);
  EXPECT_TRUE(at::equal(model.model->layers[0]->self_attn->q_norm->weight, at::ones({12})));
}

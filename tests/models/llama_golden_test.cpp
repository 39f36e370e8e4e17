// LlamaForCausalLM against Hugging Face transformers: golden files written by
// scripts/make_golden.py (weights, inputs, logits also at shifted positions, loss and every
// gradient, fp32).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>

#include "io/safetensors.h"
#include "models/hf_weights.h"
#include "nn/causal_lm_loss.h"
#include "nn/document_mask.h"
#include "support/run_command.h"
#include "util/check.h"

using namespace meshtrain;
using meshtrain::testing::hf_logit_diff;

namespace {

std::filesystem::path golden_dir(const std::string& name) {
  return std::filesystem::path(MESHTRAIN_SOURCE_DIR) / "tests" / "golden" / name;
}

double max_rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item<double>();
}

class Golden : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(Golden, LogitsLossAndGradientsMatchTransformers) {
  auto dir = golden_dir(GetParam());
  auto model = models::load_pretrained(dir);
  io::SafetensorsFile golden(dir / "golden.safetensors");
  auto input_ids = golden.read("input_ids");
  auto labels = golden.read("labels");

  auto logits = model->forward(input_ids);
  EXPECT_LT(max_rel_diff(logits, golden.read("logits")), 1e-5);
  {
    at::NoGradGuard no_grad;  // positions 40.., as a sequence shard sees them
    EXPECT_LT(max_rel_diff(model->forward(input_ids, golden.read("offset_position_ids")), golden.read("offset_logits")),
              1e-5);
  }

  auto targets = nn::shift_labels(labels);
  auto loss = nn::cross_entropy_sum(logits, targets) / nn::count_targets(targets);
  EXPECT_NEAR(loss.item<double>(), golden.read("loss").item<double>(), 1e-5);

  loss.backward();
  int checked = 0;
  for (auto& [name, p] : model->named_params()) {
    ASSERT_TRUE(golden.contains("grad." + name)) << name;
    EXPECT_LT(max_rel_diff(p.grad(), golden.read("grad." + name)), 1e-4) << name;
    ++checked;
  }
  EXPECT_EQ(checked, std::ranges::count_if(golden.names(), [](auto& n) { return n.starts_with("grad."); }));
}

INSTANTIATE_TEST_SUITE_P(Transformers, Golden,
                         ::testing::Values("llama", "llama-tied-llama3", "llama-linear"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

TEST(LlamaConfig, RejectsUnknownModelTypeAndInconsistentFields) {
  auto base = models::LlamaConfig::load(golden_dir("llama")).raw;
  auto expect_error = [](nlohmann::json j, const std::string& phrase) {
    try {
      models::LlamaConfig::from_json(j, "cfg");
      ADD_FAILURE() << "expected an error containing: " << phrase;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(phrase), std::string::npos) << e.what();
    }
  };
  auto j = base;
  j["model_type"] = "gpt2";
  expect_error(j, "unsupported model_type \"gpt2\"");
  j = base;
  j["num_key_value_heads"] = 3;
  expect_error(j, "num_attention_heads 4 is not a multiple of num_key_value_heads 3");
  j = base;
  j.erase("vocab_size");
  expect_error(j, "missing required field \"vocab_size\"");
  j = base;
  j["hidden_size"] = "big";
  expect_error(j, "field \"hidden_size\" has the wrong type");
  j["hidden_size"] = 6.5e74;  // found by bench/fuzz.sh: converting it was undefined behaviour
  expect_error(j, "field \"hidden_size\" 6.5e+74 is not an integer in range");
  j["hidden_size"] = 64.5;
  expect_error(j, "field \"hidden_size\" 64.5 is not an integer in range");
  j["hidden_size"] = 48.0;
  EXPECT_EQ(models::LlamaConfig::from_json(j, "cfg").hidden_size, 48);
  j = base;
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 2.0}};
  expect_error(j, "unsupported rope_type \"yarn\"");
}

TEST(LlamaConfig, ReadsTransformers4RopeSpelling) {
  auto j = models::LlamaConfig::load(golden_dir("llama-tied-llama3")).raw;
  auto params = j["rope_parameters"];
  j.erase("rope_parameters");
  j["rope_theta"] = params["rope_theta"];
  j["rope_scaling"] = params;
  auto c = models::LlamaConfig::from_json(j, "v4");
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, nn::RopeScaling::Type::Llama3);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8);
}

TEST(LlamaInit, ShardOfAFreshModelIsTheSliceOfTheWholeOne) {
  auto c = models::LlamaConfig::load(golden_dir("llama"));
  models::LlamaForCausalLM whole(c), shard(c);
  whole.init_weights(7);
  // Pretend q_proj rows [16, 32) are this rank's shard: same draw, sliced.
  auto& place = shard.placement("model.layers.0.self_attn.q_proj.weight");
  place.offset = {16, 0};
  auto q = shard.model->layers[0]->self_attn->q_proj;
  q->weight.set_data(q->weight.detach().narrow(0, 0, 16).clone());
  shard.init_weights(7);
  EXPECT_TRUE(at::equal(q->weight, whole.model->layers[0]->self_attn->q_proj->weight.narrow(0, 16, 16)));
  EXPECT_TRUE(at::equal(shard.model->norm->weight, at::ones({c.hidden_size})));
  auto std = whole.model->embed_tokens->weight.std().item<double>();
  EXPECT_NEAR(std, c.initializer_range, 0.2 * c.initializer_range);
}

TEST(HfLayout, ShardedTiedSaveRoundTripsAndLoadsInTransformers) {
  auto src = golden_dir("llama-tied-llama3");
  auto model = models::load_pretrained(src);
  auto out = std::filesystem::temp_directory_path() / ("mt_hf_layout_" + std::to_string(::getpid()));
  std::filesystem::remove_all(out);
  models::save_hf_checkpoint(*model, out, /*max_shard_bytes=*/40000);
  ASSERT_TRUE(std::filesystem::exists(out / "model.safetensors.index.json"));
  io::CheckpointReader saved(out);
  EXPECT_FALSE(saved.contains("lm_head.weight"));  // tied: HF re-ties on load
  auto reloaded = models::load_pretrained(out);
  auto a = model->named_params(), b = reloaded->named_params();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;

  EXPECT_LT(hf_logit_diff(out, src / "golden.safetensors"), 1e-5);
  std::filesystem::remove_all(out);
}

TEST(HfLayout, ABf16CheckpointTrainsInFp32AndExportsInBf16) {
  // A checkpoint stored in bf16 loads into fp32 parameters; the export writes the dtype it came
  // in (config.json's dtype), and writing it again gives the same bytes.
  auto model = models::load_pretrained(golden_dir("llama"));
  model->set_dtype("bfloat16");
  const auto base = std::filesystem::temp_directory_path() / ("mt_bf16_export_" + std::to_string(::getpid()));
  std::filesystem::remove_all(base);
  models::save_hf_checkpoint(*model, base / "a");
  io::CheckpointReader saved(base / "a");
  EXPECT_EQ(saved.read("model.layers.0.self_attn.q_proj.weight").scalar_type(), at::kBFloat16);
  auto reloaded = models::load_pretrained(base / "a");
  EXPECT_EQ(reloaded->config().dtype, "bfloat16");
  auto original = model->named_params(), loaded = reloaded->named_params();
  ASSERT_EQ(original.size(), loaded.size());
  for (size_t i = 0; i < original.size(); ++i) {
    EXPECT_EQ(loaded[i].second.scalar_type(), at::kFloat) << loaded[i].first;
    EXPECT_TRUE(at::equal(loaded[i].second, original[i].second.to(at::kBFloat16).to(at::kFloat))) << loaded[i].first;
  }
  models::save_hf_checkpoint(*reloaded, base / "b");
  EXPECT_EQ(meshtrain::testing::slurp(base / "a/model.safetensors"), meshtrain::testing::slurp(base / "b/model.safetensors"));
  EXPECT_THROW(model->set_dtype("float64"), Error);
  std::filesystem::remove_all(base);
}

TEST(GoldenPacked, DocumentsSideBySideMatchTransformersAndEachDocumentAlone) {
  // scripts/make_golden_packed.py: position_ids restart at each document; transformers then
  // keeps attention inside documents. The loss also equals the documents run one at a time.
  auto dir = golden_dir("llama");
  auto model = models::load_pretrained(dir);
  io::SafetensorsFile golden(dir / "packed.safetensors");
  auto position_ids = golden.read("position_ids");
  auto documents = nn::packed_document_ids(position_ids);
  ASSERT_TRUE(documents.defined());
  auto logits = model->forward(golden.read("input_ids"), position_ids, nullptr, documents);
  EXPECT_LT(max_rel_diff(logits, golden.read("logits")), 1e-5);
  auto targets = nn::shift_labels(golden.read("labels"));
  auto loss = nn::cross_entropy_sum(logits, targets) / nn::count_targets(targets);
  EXPECT_NEAR(loss.item<double>(), golden.read("loss").item<double>(), 1e-5);
  EXPECT_NEAR(loss.item<double>(), golden.read("loss_per_document").item<double>(),
              1e-5 * golden.read("loss_per_document").item<double>());
  loss.backward();
  for (auto& [name, p] : model->named_params())
    EXPECT_LT(max_rel_diff(p.grad(), golden.read("grad." + name)), 1e-4) << name;
  // Without the documents, attention crosses them: the logits differ (the check can fail).
  at::NoGradGuard no_grad;
  EXPECT_GT(max_rel_diff(model->forward(golden.read("input_ids"), position_ids), golden.read("logits")), 1e-2);
}

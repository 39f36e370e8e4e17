// tp_plans and tensor parallelism: plan parsing and lookup precedence, and a Llama sharded by
// the plan (colwise, rowwise, colwise_gather_output, embedding_rowwise) on 2 to 4 ranks against
// the serial model (logits and every gradient), uneven and empty shards included.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "dist/comm_autograd.h"
#include "parallel/tensor_parallel.h"
#include "support/run_ranks.h"
#include "util/check.h"

using namespace meshtrain;
using meshtrain::testing::run_ranks;

namespace {

dist::MeshSizes tp_sizes(int64_t tp) { return meshtrain::testing::sizes(1, 1, 1, 1, tp); }

models::LlamaConfig config_with(int64_t heads, int64_t kv, int64_t hidden, int64_t intermediate) {
  auto j = models::LlamaConfig::load(std::filesystem::path(MESHTRAIN_SOURCE_DIR) / "configs/llama-tiny").raw;
  j["num_attention_heads"] = heads;
  j["num_key_value_heads"] = kv;
  j["hidden_size"] = hidden;
  j["head_dim"] = hidden / heads;
  j["intermediate_size"] = intermediate;
  j["attention_bias"] = true;
  return models::LlamaConfig::from_json(j, "test");
}

}  // namespace

TEST(TpPlan, LookupPrecedenceAndErrors) {
  parallel::TpPlan plan({{"model.layers.*.mlp.up_proj", "colwise"},
                         {"model.layers.1.mlp.up_proj", "rowwise"},
                         {"model.layers.*.mlp.down_proj.weight", "local_rowwise"},
                         {"lm_head", "colwise_rep"}});
  using parallel::TpStyle;
  EXPECT_EQ(plan.style_of("model.layers.0.mlp.up_proj.weight"), TpStyle::Colwise);   // wildcard parent
  EXPECT_EQ(plan.style_of("model.layers.1.mlp.up_proj.weight"), TpStyle::Rowwise);   // parent beats wildcard
  EXPECT_EQ(plan.style_of("model.layers.3.mlp.down_proj.weight"), TpStyle::LocalRowwise);  // wildcard key
  EXPECT_EQ(plan.style_of("lm_head.weight"), TpStyle::ColwiseGatherOutput);          // alias
  EXPECT_FALSE(plan.style_of("model.layers.0.mlp.gate_proj.weight"));
  EXPECT_EQ(parallel::wildcard_layer_indices("model.layers.12.experts.3.w1"), "model.layers.*.experts.*.w1");
  EXPECT_EQ(plan.unused_rules({"model.layers.0.mlp.up_proj", "lm_head"}),
            (std::vector<std::string>{"model.layers.*.mlp.down_proj.weight", "model.layers.1.mlp.up_proj"}));
  try {
    parallel::TpPlan(std::map<std::string, std::string>{{"lm_head", "diagonal"}});
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("Unsupported tensor parallel style 'diagonal' for layer 'lm_head'. "
                                         "Supported styles are [colwise, colwise_gather_output"),
              std::string::npos)
        << e.what();
  }
}

TEST(TensorParallel, ModelOutputsAndGradientsEqualSerialIncludingUnevenAndEmptyShards) {
  // 6 heads / 3 kv heads over tp 3: intermediate 100 -> 34, 34, 32; vocab 256 -> 86, 86, 84.
  // tp 4: intermediate 6 -> 2, 2, 2, 0, an empty shard. The embedding is vocab-parallel too.
  for (auto [tp, heads, kv, hidden, inter] : {std::tuple{3, 6, 3, 48, 100}, {2, 4, 2, 32, 10}, {4, 4, 4, 32, 6}}) {
    auto config = config_with(heads, kv, hidden, inter);
    at::manual_seed(1);
    auto ids = at::randint(0, config.vocab_size, {2, 10});
    auto serial = std::make_shared<models::LlamaForCausalLM>(config);
    serial->init_weights(4);
    auto logits = serial->forward(ids);
    auto weights = at::randn_like(logits);
    (logits * weights).sum().backward();
    std::map<std::string, at::Tensor> want;
    for (auto& [name, p] : serial->named_params()) want[name] = p.grad();

    auto plan_rules = parallel::TpPlan::llama_default().rules();
    std::map<std::string, std::string> rules;
    for (auto& [k, v] : plan_rules) rules[k] = parallel::tp_style_name(v);
    rules["model.embed_tokens"] = "embedding_rowwise";
    run_ranks(tp_sizes(tp), [&](std::shared_ptr<dist::DeviceMesh> mesh) {
      auto model = std::make_shared<models::LlamaForCausalLM>(config);
      model->init_weights(4);
      auto report = parallel::apply_tensor_parallel(*model, *mesh, parallel::TpPlan(rules));
      EXPECT_TRUE(report.unused_rules.empty());
      auto out = model->forward(ids);
      EXPECT_LT((out - logits).abs().max().item<double>(), 1e-5);
      (out * weights).sum().backward();
      for (auto& [name, p] : model->named_params()) {
        const auto& place = model->placement(name);
        at::Tensor expected = want.at(name);
        for (size_t d = 0; d < place.offset.size(); ++d)
          expected = expected.narrow(static_cast<int64_t>(d), place.offset[d], p.size(static_cast<int64_t>(d)));
        EXPECT_TRUE(at::allclose(p.grad(), expected, 1e-4, 1e-5)) << name << " rank " << mesh->rank();
      }
    });
  }
}

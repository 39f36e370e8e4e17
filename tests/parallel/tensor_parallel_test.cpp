// tp_plans and tensor parallelism: plan parsing and lookup precedence, and a Llama sharded by
// the plan (colwise, rowwise, colwise_gather_output, rowwise_split_input, embedding_rowwise,
// packed_colwise / packed_rowwise, replicated kv heads, sequence parallelism, vocab-parallel
// loss), and MoE experts sharded inside or over ep, on 2 to 4 ranks against the serial model
// (outputs, loss and every gradient), uneven and empty shards included.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "dist/comm_autograd.h"
#include "models/hf_weights.h"
#include "nn/causal_lm_loss.h"
#include "parallel/loss_parallel.h"
#include "dist/collectives.h"
#include "parallel/expert_parallel.h"
#include "parallel/parallelize.h"
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

parallel::TpPlan plan_with(std::map<std::string, std::string> changes) {
  std::map<std::string, std::string> rules;
  const auto defaults = parallel::TpPlan::llama_default();
  for (auto& [k, v] : defaults.rules()) rules[k] = parallel::tp_style_name(v);
  for (auto& [k, v] : changes) {
    if (v.empty()) rules.erase(k);
    else rules[k] = v;
  }
  return parallel::TpPlan(rules);
}

// The serial model's cross-entropy sum over ids and its gradients, by parameter name.
struct SerialRun {
  double loss;
  std::map<std::string, at::Tensor> grads;
};

SerialRun serial_run(const models::LlamaConfig& config, const at::Tensor& ids, const at::Tensor& targets) {
  auto serial = std::make_shared<models::LlamaForCausalLM>(config);
  serial->init_weights(4);
  auto loss = nn::cross_entropy_sum(serial->forward(ids), targets);
  loss.backward();
  SerialRun run{loss.item<double>(), {}};
  for (auto& [name, p] : serial->named_params()) run.grads[name] = p.grad();
  return run;
}

// Each gradient of the parallel model equals this rank's block of the serial one, to 1e-5 of
// the tensor's largest entry.
void expect_grads_are_blocks_of(const models::LlamaForCausalLM& model, const SerialRun& serial, int rank) {
  for (auto& [name, p] : model.named_params()) {
    const auto& place = model.placement(name);
    const auto expected = place.local_of(serial.grads.at(name), p.sizes());
    // Relative to the tensor's largest entry: summation order moves small entries by fp32 noise.
    if (expected.numel() == 0) continue;
    const double difference = (p.grad() - expected).abs().max().item<double>();
    const double largest = expected.abs().max().item<double>();
    EXPECT_LE(difference, 1e-5 * largest + 1e-7)
        << name << " rank " << rank << ": max difference " << difference << " of values up to " << largest;
  }
}

// The cross-entropy sum and every gradient of the parallel model (through ParallelModel, so
// the norm gradients of sequence parallelism are summed) against the serial model's.
void expect_loss_and_grads_equal_serial(const models::LlamaConfig& config, int64_t tp,
                                        const parallel::ParallelOptions& options, int64_t seq_len = 12) {
  at::manual_seed(2);
  auto ids = at::randint(0, config.vocab_size, {2, seq_len});
  auto targets = nn::shift_labels(ids);
  const auto serial = serial_run(config, ids, targets);
  auto mesh_sizes = tp_sizes(tp);
  if (options.ep_mode == parallel::EpMode::AllReduce) {  // ep ranks drawn from the tp group
    mesh_sizes.ep = options.ep_size;
    mesh_sizes.ep_in_tp = true;
  }
  run_ranks(mesh_sizes, [&](std::shared_ptr<dist::DeviceMesh> mesh) {
    auto model = std::make_shared<models::LlamaForCausalLM>(config);
    model->init_weights(4);
    parallel::ParallelModel pm(model, mesh, options);
    auto loss = pm.loss_sum(ids, targets);
    EXPECT_NEAR(loss.item<double>(), serial.loss, 1e-5 * serial.loss);
    loss.backward();
    pm.finish_backward();
    expect_grads_are_blocks_of(*model, serial, mesh->rank());
  });
}

template <class Fn>
void expect_error(Fn fn, const std::string& text) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected: " << text;
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
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
      auto report = parallel::apply_tensor_parallel(*model, mesh->group(MeshDim::Tp), mesh->group(MeshDim::Tp),
                                                    parallel::TpPlan(rules));
      EXPECT_TRUE(report.unused_rules.empty());
      auto out = model->forward(ids);
      EXPECT_LT((out - logits).abs().max().item<double>(), 1e-5);
      (out * weights).sum().backward();
      for (auto& [name, p] : model->named_params()) {
        const auto& place = model->placement(name);
        const auto expected = place.local_of(want.at(name), p.sizes());
        EXPECT_TRUE(at::allclose(p.grad(), expected, 1e-4, 1e-5)) << name << " rank " << mesh->rank();
      }
    });
  }
}

TEST(TensorParallel, KvHeadsReplicatedWhenTpIsAMultipleOfThem) {
  parallel::ParallelOptions o;
  // 4 heads, 2 kv heads over tp 4: each kv head on 2 ranks; 1 kv head over tp 2.
  expect_loss_and_grads_equal_serial(config_with(4, 2, 32, 10), 4, o);
  expect_loss_and_grads_equal_serial(config_with(4, 1, 32, 10), 2, o);
  expect_error([&] { expect_loss_and_grads_equal_serial(config_with(6, 3, 48, 10), 2, o); },
               "num_key_value_heads 3 is not divisible by tp_size 2 or vice versa");
}

TEST(TensorParallel, PackedGateUpAndDownEqualSerial) {
  // Each of gate_proj's and up_proj's 2 blocks of 8 rows split over tp: rank r holds [first_r | second_r].
  parallel::ParallelOptions o;
  o.tp_plan = plan_with({{"model.layers.*.mlp.gate_proj", "packed_colwise"},
                         {"model.layers.*.mlp.up_proj", "packed_colwise"},
                         {"model.layers.*.mlp.down_proj", "packed_rowwise"}});
  expect_loss_and_grads_equal_serial(config_with(4, 2, 32, 16), 2, o);
  expect_loss_and_grads_equal_serial(config_with(4, 2, 32, 16), 4, o);
  o.sequence_parallel = true;
  expect_loss_and_grads_equal_serial(config_with(4, 2, 32, 16), 2, o);
  o.sequence_parallel = false;
  expect_error([&] { expect_loss_and_grads_equal_serial(config_with(4, 2, 32, 9), 2, o); },
               "Prepacked is not divisible by 2");
  expect_error([&] { expect_loss_and_grads_equal_serial(config_with(4, 2, 32, 12), 4, o); },
               "tp_size 4 does not divide 6");
  o.tp_plan = plan_with({{"model.layers.*.mlp.gate_proj", "packed_colwise"}});
  expect_error([&] { expect_loss_and_grads_equal_serial(config_with(4, 2, 32, 16), 2, o); },
               "model.layers.0.mlp: packed_colwise input projections need a packed_rowwise output projection");
  o.tp_plan = plan_with({{"model.layers.*.self_attn.q_proj", "packed_colwise"},
                         {"model.layers.*.self_attn.k_proj", "packed_colwise"},
                         {"model.layers.*.self_attn.v_proj", "packed_colwise"},
                         {"model.layers.*.self_attn.o_proj", "packed_rowwise"}});
  expect_error([&] { expect_loss_and_grads_equal_serial(config_with(4, 2, 32, 16), 2, o); },
               "packed styles shard gate / up projections and their down projection only");
}

TEST(TensorParallel, LocalStylesReduceOnceAtTheirBlocksExit) {
  // Upstream's DeepSeek-style plan: local_* projections, the one sum at the gathered block.
  parallel::ParallelOptions o;
  o.tp_plan = plan_with({{"model.layers.*.self_attn.q_proj", "local_colwise"},
                         {"model.layers.*.self_attn.k_proj", "local_colwise"},
                         {"model.layers.*.self_attn.v_proj", "local_colwise"},
                         {"model.layers.*.self_attn.o_proj", "local_rowwise"},
                         {"model.layers.*.self_attn", "gather"},
                         {"model.layers.*.mlp.gate_proj", "local_colwise"},
                         {"model.layers.*.mlp.up_proj", "local_colwise"},
                         {"model.layers.*.mlp.down_proj", "local_rowwise"},
                         {"model.layers.*.mlp", "all_reduce"}});
  expect_loss_and_grads_equal_serial(config_with(4, 2, 32, 10), 2, o);  // o_proj's bias added once
  o.tp_plan = plan_with({{"model.layers.*.mlp.up_proj", ""}, {"model.layers.*.mlp.down_proj", "local_rowwise"}});
  expect_error([&] { expect_loss_and_grads_equal_serial(config_with(4, 2, 32, 10), 2, o); },
               "style local_rowwise on model.layers.0.mlp.down_proj: its partial sums are reduced at the block's exit");
  o.tp_plan = plan_with({{"model.layers.*.mlp.up_proj", ""}, {"model.layers.*.mlp", "gather"}});
  expect_error([&] { expect_loss_and_grads_equal_serial(config_with(4, 2, 32, 10), 2, o); },
               "style all_reduce on model.layers.0.mlp: a block takes all_reduce (gather) only");
  o.tp_plan = plan_with({{"model.layers.*.mlp.down_proj", "all_reduce"}});
  expect_error([&] { expect_loss_and_grads_equal_serial(config_with(4, 2, 32, 10), 2, o); },
               "it sums a block's partial outputs, so it applies to an attention or MLP block");
  o.tp_plan = plan_with({{"model.layers.*.mlp.down_proj", "local"}});
  expect_error([&] { expect_loss_and_grads_equal_serial(config_with(4, 2, 32, 10), 2, o); },
               "style local on model.layers.0.mlp.down_proj");
}

TEST(TensorParallel, Qwen3MoeUpstreamPlanSumsPerHeadNormGradients) {
  // transformers' Qwen3-MoE tp plan names q_norm / k_norm replicated_with_grad_allreduce.
  auto config = models::LlamaConfig::load(std::filesystem::path(MESHTRAIN_SOURCE_DIR) / "configs/qwen3-moe-tiny");
  const auto defaults = parallel::TpPlan::hf_default("qwen3_moe");
  std::map<std::string, std::string> rules;
  for (auto& [k, v] : defaults.rules()) rules[k] = parallel::tp_style_name(v);
  rules["model.layers.*.self_attn.q_norm"] = rules["model.layers.*.self_attn.k_norm"] = "replicated_with_grad_allreduce";
  parallel::ParallelOptions o;
  o.tp_plan = parallel::TpPlan(rules);
  expect_loss_and_grads_equal_serial(config, 2, o);
  rules["model.norm"] = "replicated_with_grad_allreduce";  // sees every token and head: would count tp times
  o.tp_plan = parallel::TpPlan(rules);
  expect_error([&] { expect_loss_and_grads_equal_serial(config, 2, o); },
               "style replicated_with_grad_allreduce on model.norm: this norm sees every token and head");
}

TEST(TensorParallel, MoeExpertsShardedInsideEqualSerial) {
  // The default MoE plans shard each expert's gate_up_proj packed_colwise and down_proj rowwise.
  for (auto name : {"mixtral-tiny", "qwen3-moe-tiny"}) {
    auto config = models::LlamaConfig::load(std::filesystem::path(MESHTRAIN_SOURCE_DIR) / "configs" / name);
    expect_loss_and_grads_equal_serial(config, 2, {});
    expect_loss_and_grads_equal_serial(config, 4, {});
    config.moe->capacity_factor = 0.75;  // drops assignments
    expect_loss_and_grads_equal_serial(config, 2, {});
    // Sequence parallelism: each MoE block gathers the sequence and keeps its shard of the output.
    parallel::ParallelOptions sp;
    sp.sequence_parallel = true;
    expect_loss_and_grads_equal_serial(config, 2, sp);
    sp.tp_plan = parallel::TpPlan::hf_default(config.model_type, /*shard_experts=*/false);
    expect_loss_and_grads_equal_serial(config, 2, sp);
  }
  auto config = models::LlamaConfig::load(std::filesystem::path(MESHTRAIN_SOURCE_DIR) / "configs/qwen3-moe-tiny");
  parallel::ParallelOptions o;  // experts replicated over tp, attention and dense layers sharded
  o.tp_plan = parallel::TpPlan::hf_default("qwen3_moe", false);
  expect_loss_and_grads_equal_serial(config, 2, o);
  o.tp_plan = plan_with({{"model.layers.*.mlp.experts.gate_up_proj", "packed_colwise"}});
  expect_error([&] { expect_loss_and_grads_equal_serial(config, 2, o); },
               "model.layers.1.mlp.experts: the experts shard gate_up_proj packed_colwise and down_proj rowwise "
               "together; the tp_plan gives packed_colwise and none");
  // Router masking over every other rank of tp 4; the other pairs (etp) split each expert inside.
  o.tp_plan.reset();
  o.ep_size = 2;
  o.ep_mode = parallel::EpMode::AllReduce;
  expect_loss_and_grads_equal_serial(config, 4, o);
  auto mesh_sizes = tp_sizes(4);
  mesh_sizes.ep = 2;
  mesh_sizes.ep_in_tp = true;
  run_ranks(mesh_sizes, [&](std::shared_ptr<dist::DeviceMesh> mesh) {
    auto model = std::make_shared<models::LlamaForCausalLM>(config);
    parallel::ParallelModel pm(model, mesh, o);
    const auto& place = model->placement("model.layers.1.mlp.experts.gate_up_proj");
    // Split inside over etp (by tp), then over ep; held alike by the ep replicas.
    EXPECT_EQ(place.mesh_dims, (std::vector<MeshDim>{MeshDim::Etp, MeshDim::EpReplicate, MeshDim::Ep}));
    EXPECT_TRUE(place.is(MeshDim::Etp, nn::Placement::Kind::Shard) && place.is(MeshDim::Ep, nn::Placement::Kind::Shard));
    EXPECT_EQ(model->model->layers[1]->moe->experts->gate_up_proj.sizes(), (at::IntArrayRef{2, 64, 64}));
  });
}

TEST(ExpertParallel, RouterMaskingOverTpEqualsSerialDroplessAndWithCapacity) {
  parallel::ParallelOptions o;
  o.ep_size = 2;
  o.ep_mode = parallel::EpMode::AllReduce;
  for (auto name : {"mixtral-tiny", "qwen3-moe-tiny"}) {
    auto config = models::LlamaConfig::load(std::filesystem::path(MESHTRAIN_SOURCE_DIR) / "configs" / name);
    expect_loss_and_grads_equal_serial(config, 2, o);
    config.moe->capacity_factor = 0.75;  // drops assignments
    expect_loss_and_grads_equal_serial(config, 2, o);
  }
  auto config = models::LlamaConfig::load(std::filesystem::path(MESHTRAIN_SOURCE_DIR) / "configs/mixtral-tiny");
  auto three = tp_sizes(3);
  three.ep = 3;
  three.ep_in_tp = true;
  expect_error([&] {
    run_ranks(three, [&](std::shared_ptr<dist::DeviceMesh> mesh) {
      models::LlamaForCausalLM model(config);
      parallel::apply_expert_parallel(model, mesh->group(MeshDim::Ep), parallel::EpMode::AllReduce);
    });
  }, "The number of experts must be divisible by number of ep_size: 4 % 3 != 0");
  o.ep_mode = parallel::EpMode::AllToAll;  // the mesh has no ep blocks
  expect_error([&] { expect_loss_and_grads_equal_serial(config, 2, o); }, "the mesh was built with ep 1");
}

TEST(ExpertParallel, TokenDispatchOverDpShardEqualsSerial) {
  // Each of dp_shard 2 (and 4) ranks routes its own rows; the experts are split over ep, and
  // inside over tp when tp > 1. Without ep, FSDP shards the experts split inside.
  struct Layout {
    int64_t dp_shard, ep, tp;
  };
  for (auto [dp_shard, ep, tp] : {Layout{2, 2, 1}, {4, 4, 1}, {4, 2, 1}, {2, 2, 2}, {2, 1, 2}}) {
    auto config = models::LlamaConfig::load(std::filesystem::path(MESHTRAIN_SOURCE_DIR) / "configs/mixtral-tiny");
    at::manual_seed(5);
    auto ids = at::randint(0, config.vocab_size, {4, 10});
    auto targets = nn::shift_labels(ids);
    const auto serial = serial_run(config, ids, targets);
    auto mesh_sizes = meshtrain::testing::sizes(1, dp_shard, 1, 1, tp);
    mesh_sizes.ep = ep;
    run_ranks(mesh_sizes, [&](std::shared_ptr<dist::DeviceMesh> mesh) {
      auto model = std::make_shared<models::LlamaForCausalLM>(config);
      model->init_weights(4);
      parallel::ParallelOptions o;
      o.ep_size = ep;
      parallel::ParallelModel pm(model, mesh, o);
      const int64_t rows = 4 / dp_shard, first = mesh->coordinate(MeshDim::DpShard) * rows;
      auto loss = pm.loss_sum(ids.narrow(0, first, rows), targets.narrow(0, first, rows));
      loss.backward();
      pm.finish_backward();
      auto total = loss.detach().clone();
      dist::all_reduce_(mesh->group(MeshDim::Dp), total);
      EXPECT_NEAR(total.item<double>(), serial.loss, 1e-5 * serial.loss);
      expect_grads_are_blocks_of(*model, serial, mesh->rank());
    });
  }
}

TEST(ExpertParallel, TokenDispatchCapacityCountsEachRanksOwnTokens) {
  // The capacity ceil(f · N · k / E) counts the N tokens of one forward on one rank, as
  // Megatron-Core does: under token dispatch each rank routes its own rows, so a dropping run
  // equals serial runs over each rank's rows (summed), not one serial run over the whole batch.
  auto config = models::LlamaConfig::load(std::filesystem::path(MESHTRAIN_SOURCE_DIR) / "configs/mixtral-tiny");
  config.moe->capacity_factor = 0.75;
  at::manual_seed(6);
  auto ids = at::randint(0, config.vocab_size, {4, 10});
  auto targets = nn::shift_labels(ids);
  SerialRun per_rank{0.0, {}};
  std::vector<int64_t> dropped;  // serial drops of layer 0 on each rank's rows
  auto serial = std::make_shared<models::LlamaForCausalLM>(config);
  serial->init_weights(4);
  for (int64_t r = 0; r < 2; ++r) {
    models::Routing routing;
    auto loss = nn::cross_entropy_sum(serial->forward(ids.narrow(0, 2 * r, 2), {}, &routing), targets.narrow(0, 2 * r, 2));
    loss.backward();
    per_rank.loss += loss.item<double>();
    dropped.push_back(routing[0].dropped);
  }
  for (auto& [name, p] : serial->named_params()) per_rank.grads[name] = p.grad();
  ASSERT_GT(dropped[0] + dropped[1], 0);
  const auto whole = serial_run(config, ids, targets);
  EXPECT_GT(std::abs(whole.loss - per_rank.loss), 1e-5 * per_rank.loss);  // the two semantics differ here

  auto mesh_sizes = meshtrain::testing::sizes(1, 2);
  mesh_sizes.ep = 2;
  run_ranks(mesh_sizes, [&](std::shared_ptr<dist::DeviceMesh> mesh) {
    auto model = std::make_shared<models::LlamaForCausalLM>(config);
    model->init_weights(4);
    parallel::ParallelOptions o;
    o.ep_size = 2;
    parallel::ParallelModel pm(model, mesh, o);
    const int64_t r = mesh->coordinate(MeshDim::DpShard);
    models::Routing routing;
    auto loss = pm.loss_sum(ids.narrow(0, 2 * r, 2), targets.narrow(0, 2 * r, 2), &routing);
    EXPECT_EQ(routing[0].dropped, dropped[r]) << "rank " << r;
    loss.backward();
    pm.finish_backward();
    auto total = loss.detach().clone();
    dist::all_reduce_(mesh->group(MeshDim::Dp), total);
    EXPECT_NEAR(total.item<double>(), per_rank.loss, 1e-5 * per_rank.loss);
    expect_grads_are_blocks_of(*model, per_rank, mesh->rank());
  });
}

TEST(TensorParallel, RowwiseSplitInputAfterReplicatedAttention) {
  parallel::ParallelOptions o;
  o.tp_plan = plan_with({{"model.layers.*.self_attn.q_proj", ""},
                         {"model.layers.*.self_attn.k_proj", ""},
                         {"model.layers.*.self_attn.v_proj", ""},
                         {"model.layers.*.self_attn.o_proj", "rowwise_split_input"}});
  expect_loss_and_grads_equal_serial(config_with(4, 2, 32, 10), 2, o);
}

TEST(TensorParallel, SequenceParallelEqualsSerialWithTiedAndUntiedHeads) {
  parallel::ParallelOptions o;
  o.sequence_parallel = true;
  expect_loss_and_grads_equal_serial(config_with(4, 2, 32, 10), 2, o);
  expect_loss_and_grads_equal_serial(config_with(4, 2, 32, 6), 4, o);  // kv replicated, an empty MLP shard
  auto tied = config_with(4, 2, 32, 10);
  tied.tie_word_embeddings = true;
  o.tp_plan = plan_with({{"model.embed_tokens", "embedding_rowwise"}, {"lm_head", ""}});
  expect_loss_and_grads_equal_serial(tied, 2, o);
  o.tp_plan = plan_with({{"lm_head", ""}});  // tied head, replicated embedding
  expect_loss_and_grads_equal_serial(tied, 2, o);
  expect_error([&] { expect_loss_and_grads_equal_serial(config_with(4, 2, 32, 10), 2, o, 11); },
               "seq_len 11 is not divisible by tp_size 2");
  o.tp_plan = plan_with({{"model.layers.*.mlp.up_proj", ""}});
  expect_error([&] { expect_loss_and_grads_equal_serial(config_with(4, 2, 32, 10), 2, o); },
               "model.layers.0.mlp is not");
}

TEST(TensorParallel, LossParallelEqualsTheGatheredLoss) {
  parallel::ParallelOptions o;
  o.loss_parallel = true;
  auto config = config_with(4, 2, 32, 10);
  config.vocab_size = 250;  // 63, 63, 63, 61 over tp 4
  expect_loss_and_grads_equal_serial(config, 2, o);
  expect_loss_and_grads_equal_serial(config, 4, o);
  o.sequence_parallel = true;
  config.tie_word_embeddings = true;
  o.tp_plan = plan_with({{"model.embed_tokens", "embedding_rowwise"}, {"lm_head", ""}});
  expect_loss_and_grads_equal_serial(config, 2, o);
  o.tp_plan = plan_with({{"lm_head", ""}});
  expect_error([&] { expect_loss_and_grads_equal_serial(config, 2, o); }, "--loss_parallel needs the output layer");
}

TEST(LossParallel, VocabShardsIncludingAnEmptyOneGiveTheFullCrossEntropyAndGradient) {
  // vocab 7 over 4 ranks: 2, 2, 2, 1; vocab 6: 2, 2, 2, 0 (an empty shard).
  for (int64_t vocab : {7, 6}) {
    at::manual_seed(3);
    auto logits = at::randn({2, 5, vocab}).requires_grad_();
    auto targets = at::randint(0, vocab, {2, 5});
    targets[0][4] = nn::kIgnoreIndex;
    targets[1][0] = nn::kIgnoreIndex;
    auto want = nn::cross_entropy_sum(logits, targets);
    auto weight = 0.7;
    (want * weight).backward();
    run_ranks(tp_sizes(4), [&](std::shared_ptr<dist::DeviceMesh> mesh) {
      auto& g = mesh->group(MeshDim::Tp);
      auto sizes = dist::chunk_sizes(vocab, 4);
      int64_t offset = 0;
      for (int r = 0; r < g.rank(); ++r) offset += sizes[r];
      auto local = logits.detach().narrow(2, offset, sizes[g.rank()]).clone().requires_grad_();
      auto got = parallel::vocab_parallel_cross_entropy_sum(local, targets, g, offset);
      EXPECT_NEAR(got.item<double>(), want.item<double>(), 1e-5);
      (got * weight).backward();
      EXPECT_TRUE(at::allclose(local.grad(), logits.grad().narrow(2, offset, sizes[g.rank()]), 1e-5, 1e-6));
    });
  }
}

TEST(TensorParallel, LoadingReadsOnlyEachRanksSliceAndFsdpOverTpSharesTheSameBlocks) {
  auto config = config_with(4, 2, 32, 10);
  auto serial = std::make_shared<models::LlamaForCausalLM>(config);
  serial->init_weights(9);
  auto dir = std::filesystem::temp_directory_path() / ("mt_tp_load_" + std::to_string(::getpid()));
  models::save_hf_checkpoint(*serial, dir);
  auto serial_params = serial->named_params();
  for (auto [dp_shard, tp] : {std::pair<int64_t, int64_t>{1, 2}, {2, 2}}) {
    run_ranks(meshtrain::testing::sizes(1, dp_shard, 1, 1, tp), [&](std::shared_ptr<dist::DeviceMesh> mesh) {
      auto model = std::make_shared<models::LlamaForCausalLM>(config);
      parallel::ParallelOptions o;
      o.tp_plan = plan_with({{"model.embed_tokens", "embedding_rowwise"}});
      parallel::ParallelModel pm(model, mesh, o);
      io::CheckpointReader reader(dir);
      models::load_hf_weights(*model, reader);
      uint64_t expected_bytes = 0, whole_bytes = 0;
      auto params = model->named_params();
      for (size_t i = 0; i < params.size(); ++i) {
        auto& [name, p] = params[i];
        const auto& place = model->placement(name);
        const auto want = place.local_of(serial_params[i].second, p.sizes());
        EXPECT_TRUE(at::equal(p, want)) << name;
        // The block is read as a slice along its first split dim, then narrowed on the others.
        auto read_shape = place.global_shape;
        for (size_t d = 0; d < read_shape.size(); ++d)
          if (p.size(static_cast<int64_t>(d)) != read_shape[d]) {
            read_shape[d] = p.size(static_cast<int64_t>(d));
            break;
          }
        expected_bytes += 4 * static_cast<uint64_t>(c10::multiply_integers(read_shape));
        whole_bytes += 4 * static_cast<uint64_t>(c10::multiply_integers(place.global_shape));
      }
      // Norms are replicated, everything else is split over tp: about half is read.
      if (dp_shard == 1) {
        EXPECT_LT(reader.bytes_read(), whole_bytes * 0.55) << "rank " << mesh->rank();
      }
      EXPECT_EQ(reader.bytes_read(), expected_bytes) << "rank " << mesh->rank();
    });
  }
  std::filesystem::remove_all(dir);
}

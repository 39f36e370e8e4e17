// Parallel layouts against one rank: data (DDP, FSDP, HSDP), tensor (plain and packed, with
// sequence and loss parallelism), context, Ulysses and expert parallelism on 2 to 4 ranks
// (threads over Gloo on loopback) train tiny models for 20 steps with the same global batch,
// each also with activation checkpointing (the same losses to 1e-6);
// every step's loss and gradient norm (before clipping, which acts on every step) must be
// within 1e-5 relative of the single-rank run, and the final parameters within 1e-5 (data
// parallelism) or 1e-3 (the others). MoE gradient norms get 2e-4: top-k routing has near-ties
// that rounding decides (mixtral-tiny's step 19 moves by 2.5e-5 between 1 and 2 threads on one
// rank, its loss by 7e-8), far below the factor a norm that miscounts replicas is off by.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>

#include "data/token_dataset.h"
#include "io/safetensors.h"
#include "parallel/ddp.h"
#include "support/run_ranks.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

using namespace meshtrain;
using meshtrain::testing::run_ranks;
using meshtrain::testing::sizes;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kGlobalBatch = 8;
constexpr int kSteps = 20;

struct Run {
  std::string name;
  std::vector<double> losses, grad_norms;
  double grad_norm_tol = 1e-5;
  fs::path dir;
  size_t ddp_buckets = 0;
};

models::LlamaConfig tiny_config() {
  return models::LlamaConfig::load(fs::path(MESHTRAIN_SOURCE_DIR) / "configs/llama-tiny");
}

Run train_once(const std::string& name, const dist::MeshSizes& mesh_sizes, int64_t accum,
               const parallel::ParallelOptions& options, int64_t save_steps, const std::string& resume,
               const models::LlamaConfig& config) {
  static auto data = data::open_token_dataset(fs::path(MESHTRAIN_SOURCE_DIR) / "data/corpus.txt");
  data->max_token();  // cached before the ranks share the dataset
  Run run;
  run.name = name;
  if (config.moe) run.grad_norm_tol = 2e-4;
  run.dir = fs::temp_directory_path() / ("mt_parity_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(run.dir);
  run_ranks(mesh_sizes, [&](std::shared_ptr<dist::DeviceMesh> mesh) {
    auto model = std::make_shared<models::LlamaForCausalLM>(config);
    model->init_weights(5);
    auto pm = std::make_shared<parallel::ParallelModel>(model, mesh, options);
    train::TrainingArguments args;
    args.per_device_train_batch_size = kGlobalBatch / accum / (mesh_sizes.dp_replicate * mesh_sizes.dp_shard);
    args.gradient_accumulation_steps = accum;
    args.learning_rate = 3e-3;
    args.weight_decay = 0.1;
    args.max_steps = kSteps;
    args.warmup_steps = 3;
    args.logging_steps = 5;
    args.save_steps = save_steps;
    args.resume_from_checkpoint = resume;
    args.output_dir = run.dir.string();
    train::Trainer trainer(pm, *data, 32, args);
    trainer.verbose = false;
    trainer.peak_flops = 1e9;
    auto records = trainer.train();
    for (auto& r : records) ASSERT_LT(args.max_grad_norm, r.grad_norm) << "step " << r.step;  // clipping acts
    if (mesh->rank() == 0 && pm->ddp()) run.ddp_buckets = pm->ddp()->num_buckets();
    if (mesh->rank() == 0)
      for (auto& r : records) {
        run.losses.push_back(r.loss);
        run.grad_norms.push_back(r.grad_norm);
      }
  });
  return run;
}

// A layout's run, checked against the same layout with every layer checkpointed: the same
// losses to 1e-6 relative (recomputation changes only where gradients accumulate).
Run train_layout(const std::string& name, const dist::MeshSizes& mesh_sizes, int64_t accum,
                 parallel::ParallelOptions options = {}, int64_t save_steps = 0, const std::string& resume = "",
                 const models::LlamaConfig& config = tiny_config()) {
  auto run = train_once(name, mesh_sizes, accum, options, save_steps, resume, config);
  options.ac_mode = parallel::AcMode::Full;
  auto checkpointed = train_once(name + "_ac", mesh_sizes, accum, options, 0, resume, config);
  EXPECT_EQ(checkpointed.losses.size(), run.losses.size());
  for (size_t s = 0; s < std::min(run.losses.size(), checkpointed.losses.size()); ++s) {
    EXPECT_NEAR(checkpointed.losses[s], run.losses[s], 1e-6 * run.losses[s]) << name << " checkpointed, step " << s + 1;
    EXPECT_NEAR(checkpointed.grad_norms[s], run.grad_norms[s], std::max(1e-6, run.grad_norm_tol) * run.grad_norms[s])
        << name << " checkpointed, grad_norm of step " << s + 1;
  }
  fs::remove_all(checkpointed.dir);
  return run;
}

const Run& single() {
  static Run run = train_layout("single", sizes(1, 1), 2);
  return run;
}

// Final parameters: within 1e-5 for data parallelism. Tensor parallelism sums partial products
// in another order, and AdamW's m / sqrt(v) magnifies that on near-zero gradients; its losses
// still agree to 1e-5 at every step.
void expect_parity(const Run& run, bool keep_dir = false, double param_tol = 1e-5, const Run& ref = single()) {
  ASSERT_LE(run.losses.size(), ref.losses.size());
  const size_t skipped = ref.losses.size() - run.losses.size();  // a resumed run starts later
  double worst_loss = 0.0, worst_norm = 0.0;
  for (size_t s = 0; s < run.losses.size(); ++s) {
    EXPECT_NEAR(run.losses[s], ref.losses[s + skipped], 1e-5 * std::abs(ref.losses[s + skipped]))
        << "step " << s + skipped + 1;
    EXPECT_NEAR(run.grad_norms[s], ref.grad_norms[s + skipped], run.grad_norm_tol * ref.grad_norms[s + skipped])
        << "grad_norm of step " << s + skipped + 1;
    worst_loss = std::max(worst_loss, std::abs(run.losses[s] / ref.losses[s + skipped] - 1));
    worst_norm = std::max(worst_norm, std::abs(run.grad_norms[s] / ref.grad_norms[s + skipped] - 1));
  }
  // The largest relative differences, in the test's XML / JSON output (--gtest_output).
  char worst[64];
  std::snprintf(worst, sizeof worst, "loss %.1e grad_norm %.1e", worst_loss, worst_norm);
  ::testing::Test::RecordProperty(run.name, worst);
  EXPECT_LT(ref.losses.back(), ref.losses.front() - 0.5);  // it trained
  io::SafetensorsFile a(ref.dir / "model.safetensors"), b(run.dir / "model.safetensors");
  ASSERT_EQ(a.names(), b.names());
  for (auto& name : a.names()) {
    auto x = a.read(name), y = b.read(name);
    EXPECT_LT(((x - y).abs().max() / x.abs().max()).item<double>(), param_tol) << name;
  }
  if (!keep_dir) fs::remove_all(run.dir);
}

// Llama's plan with some rules changed.
parallel::ParallelOptions llama_plan_with(const std::map<std::string, std::string>& changes) {
  const auto defaults = parallel::TpPlan::llama_default();
  std::map<std::string, std::string> rules;
  for (auto& [k, v] : defaults.rules()) rules[k] = parallel::tp_style_name(v);
  for (auto& [k, v] : changes) rules[k] = v;
  parallel::ParallelOptions o;
  o.tp_plan = parallel::TpPlan(rules);
  return o;
}

// Llama's MLP under packed styles: rank r holds [first_r | second_r] of gate_proj's and
// up_proj's rows and the same columns of down_proj.
parallel::ParallelOptions packed_mlp() {
  return llama_plan_with({{"model.layers.*.mlp.gate_proj", "packed_colwise"},
                          {"model.layers.*.mlp.up_proj", "packed_colwise"},
                          {"model.layers.*.mlp.down_proj", "packed_rowwise"}});
}

}  // namespace

TEST(LossParity, Ddp2WithSmallBuckets) {
  parallel::ParallelOptions o;
  o.ddp_bucket_cap_mb = 0.05;  // several buckets for this model
  auto run = train_layout("ddp2", sizes(2, 1), 2, o);
  EXPECT_GT(run.ddp_buckets, 3u);
  expect_parity(run);
}
TEST(LossParity, Ddp4) { expect_parity(train_layout("ddp4", sizes(4, 1), 1)); }
TEST(LossParity, Fsdp2) { expect_parity(train_layout("fsdp2", sizes(1, 2), 2)); }
TEST(LossParity, Fsdp2KeepingGatheredWeights) {
  parallel::ParallelOptions o;
  o.reshard_after_forward = false;
  expect_parity(train_layout("fsdp2_keep", sizes(1, 2), 1, o));
}
TEST(LossParity, Fsdp4) { expect_parity(train_layout("fsdp4", sizes(1, 4), 1)); }
TEST(LossParity, Hsdp2x2) { expect_parity(train_layout("hsdp", sizes(2, 2), 2)); }

TEST(LossParity, CheckpointOfFsdp4ResumesUnderDdp2AndOnOneRank) {
  auto fsdp = train_layout("fsdp4_saving", sizes(1, 4), 1, {}, /*save_steps=*/10);
  expect_parity(fsdp, /*keep_dir=*/true);
  const auto ckpt = (fsdp.dir / "checkpoint-10").string();
  auto ddp = train_layout("ddp2_resumed", sizes(2, 1), 2, {}, 0, ckpt);
  EXPECT_EQ(ddp.losses.size(), 10u);
  expect_parity(ddp);
  auto one = train_layout("single_resumed", sizes(1, 1), 2, {}, 0, ckpt);
  EXPECT_EQ(one.losses.size(), 10u);
  expect_parity(one);
  fs::remove_all(fsdp.dir);
}

TEST(HfExport, GatheredFromFsdpAndPackedShardsIsByteIdenticalToTheSingleRankExport) {
  auto config = models::LlamaConfig::load(fs::path(MESHTRAIN_SOURCE_DIR) / "tests/golden/llama-tied-llama3");
  auto base = fs::temp_directory_path() / ("mt_export_" + std::to_string(::getpid()));
  fs::remove_all(base);
  auto export_with = [&](const dist::MeshSizes& mesh_sizes, const std::string& name,
                         const parallel::ParallelOptions& options = {}) {
    run_ranks(mesh_sizes, [&](std::shared_ptr<dist::DeviceMesh> mesh) {
      auto model = std::make_shared<models::LlamaForCausalLM>(config);
      model->init_weights(9);
      parallel::ParallelModel pm(model, mesh, options);
      train::export_hf_checkpoint(pm, base / name, /*max_shard_bytes=*/60000);
    });
  };
  export_with(sizes(1, 1), "single");
  export_with(sizes(1, 3), "fsdp3");
  export_with(sizes(2, 2), "hsdp");
  export_with(sizes(1, 2, 1, 1, 2), "tp2_fsdp2_packed", packed_mlp());  // repacked to gate ‖ up
  int files = 0;
  for (auto& entry : fs::directory_iterator(base / "single")) {
    const auto file = entry.path().filename();
    for (auto other : {"fsdp3", "hsdp", "tp2_fsdp2_packed"}) {
      ASSERT_TRUE(fs::exists(base / other / file)) << file;
      auto a = meshtrain::testing::read_bytes(entry.path()), b = meshtrain::testing::read_bytes(base / other / file);
      EXPECT_TRUE(a == b) << other << "/" << file << " differs";
    }
    ++files;
  }
  EXPECT_GE(files, 3);  // shards, index, config
  fs::remove_all(base);
}

TEST(LossParity, TensorParallel2AndWithDdp2) {
  expect_parity(train_layout("tp2", sizes(1, 1, 1, 1, 2), 2), /*keep_dir=*/false, /*param_tol=*/1e-3);
  expect_parity(train_layout("tp2_ddp2", sizes(2, 1, 1, 1, 2), 2), false, 1e-3);
}

TEST(LossParity, TensorParallel4ReplicatingKvHeads) {  // llama-tiny has 2 kv heads
  expect_parity(train_layout("tp4", sizes(1, 1, 1, 1, 4), 1), false, 1e-3);
}

TEST(LossParity, TensorParallel2WithSequenceParallelAndLossParallel) {
  parallel::ParallelOptions o;
  o.sequence_parallel = true;
  expect_parity(train_layout("tp2_sp", sizes(1, 1, 1, 1, 2), 2, o), false, 1e-3);
  o.loss_parallel = true;
  expect_parity(train_layout("tp2_sp_loss", sizes(1, 1, 1, 1, 2), 2, o), false, 1e-3);
}

TEST(LossParity, TensorParallel2TimesFsdp2) {
  expect_parity(train_layout("tp2_fsdp2", sizes(1, 2, 1, 1, 2), 1), false, 1e-3);
}

TEST(LossParity, PackedTensorParallel2CheckpointResumesOnOneRankAndUnderFsdp2) {
  auto packed = train_layout("tp2_packed", sizes(1, 1, 1, 1, 2), 2, packed_mlp(), /*save_steps=*/10);
  expect_parity(packed, /*keep_dir=*/true, 1e-3);
  const auto ckpt = (packed.dir / "checkpoint-10").string();
  auto one = train_layout("packed_on_one", sizes(1, 1), 2, {}, 0, ckpt);
  EXPECT_EQ(one.losses.size(), 10u);
  expect_parity(one, false, 1e-3);
  auto fsdp = train_layout("packed_tp2_fsdp2", sizes(1, 2, 1, 1, 2), 1, packed_mlp(), 0, ckpt);
  EXPECT_EQ(fsdp.losses.size(), 10u);
  expect_parity(fsdp, false, 1e-3);
  fs::remove_all(packed.dir);
}

TEST(LossParity, UnevenTensorParallel3) {
  // 6 heads / 3 kv heads of 8; intermediate 176 -> 59, 59, 58; vocab 256 -> 86, 86, 84 with a
  // vocab-parallel embedding.
  auto j = tiny_config().raw;
  j["hidden_size"] = 48;
  j["num_attention_heads"] = 6;
  j["num_key_value_heads"] = 3;
  j["head_dim"] = 8;
  auto config = models::LlamaConfig::from_json(j, "tp3");
  auto o = llama_plan_with({{"model.embed_tokens", "embedding_rowwise"}});
  auto ref = train_layout("tp3_single", sizes(1, 1), 1, {}, 0, "", config);
  expect_parity(train_layout("tp3", sizes(1, 1, 1, 1, 3), 1, o, 0, "", config), false, 1e-3, ref);
  fs::remove_all(ref.dir);
}

// Context (ring) and Ulysses parallelism: the sequence is cut over cp and sp, attention is
// exchanged across them, and parameters are replicated (FSDP shards over dp_shard × cp).
TEST(LossParity, ContextParallel2RingAnd4AllGather) {
  expect_parity(train_layout("cp2", sizes(1, 1, 2), 2), false, 1e-3);
  parallel::ParallelOptions o;
  o.cp_comm_strategy = parallel::CpCommStrategy::AllGather;
  expect_parity(train_layout("cp4", sizes(1, 1, 4), 1, o), false, 1e-3);
}

TEST(LossParity, Ulysses2And4) {  // sp 4 replicates llama-tiny's 2 kv heads
  expect_parity(train_layout("sp2", sizes(1, 1, 1, 2), 2), false, 1e-3);
  expect_parity(train_layout("sp4", sizes(1, 1, 1, 4), 1), false, 1e-3);
}

TEST(LossParity, ContextParallel2TimesUlysses2) {
  expect_parity(train_layout("cp2_sp2", sizes(1, 1, 2, 2), 1), false, 1e-3);
}

TEST(LossParity, ContextParallel2TimesTensorParallel2) {
  expect_parity(train_layout("cp2_tp2", sizes(1, 1, 2, 1, 2), 1), false, 1e-3);
}

TEST(LossParity, ContextParallel2TimesFsdp2) {
  expect_parity(train_layout("cp2_fsdp2", sizes(1, 2, 2), 1), false, 1e-3);
}

TEST(LossParity, Ulysses2TimesTensorParallel2AndTimesFsdp2) {
  expect_parity(train_layout("sp2_tp2", sizes(1, 1, 1, 2, 2), 1), false, 1e-3);
  expect_parity(train_layout("sp2_fsdp2", sizes(1, 2, 1, 2), 1), false, 1e-3);
}

// MoE: expert parallelism in router-masking mode over the tp group (aux loss in the gradients):
// ep 2 = tp, and ep 2 in tp 4, where the pairs of ranks holding the same experts split them inside.
TEST(LossParity, MixtralAndQwen3MoeExpertParallel2AllReduce) {
  parallel::ParallelOptions o;
  o.ep_size = 2;
  o.ep_mode = parallel::EpMode::AllReduce;
  for (auto name : {"mixtral-tiny", "qwen3-moe-tiny"}) {
    auto config = models::LlamaConfig::load(fs::path(MESHTRAIN_SOURCE_DIR) / "configs" / name);
    auto ref = train_layout(std::string(name) + "_single", sizes(1, 1), 1, {}, 0, "", config);
    for (int64_t tp : {2, 4}) {
      auto mesh_sizes = sizes(1, 1, 1, 1, tp);
      mesh_sizes.ep = 2;
      mesh_sizes.ep_in_tp = true;
      expect_parity(train_layout(std::string(name) + "_ep2_tp" + std::to_string(tp), mesh_sizes, 1, o, 0, "", config),
                    false, 1e-3, ref);
    }
    fs::remove_all(ref.dir);
  }
}

// MoE: token-dispatch expert parallelism over ep ranks drawn from dp_shard × cp, and tensor
// parallelism inside the experts (the default MoE plans), alone, with sequence parallelism and
// under ep.
TEST(LossParity, MixtralAndQwen3MoeExpertParallelAllToAllAndTensorParallelExperts) {
  struct Layout {
    const char* name;
    dist::MeshSizes sizes;
    int64_t ep;
    bool sequence_parallel = false;
  };
  for (auto model : {"mixtral-tiny", "qwen3-moe-tiny"}) {
    auto config = models::LlamaConfig::load(fs::path(MESHTRAIN_SOURCE_DIR) / "configs" / model);
    auto ref = train_layout(std::string(model) + "_single", sizes(1, 1), 1, {}, 0, "", config);
    for (auto layout : {Layout{"ep2", sizes(1, 2), 2}, Layout{"ep4", sizes(1, 4), 4}, Layout{"tp2", sizes(1, 1, 1, 1, 2), 1},
                        Layout{"tp2_sp", sizes(1, 1, 1, 1, 2), 1, true},
                        Layout{"ep2_tp2", sizes(1, 2, 1, 1, 2), 2}, Layout{"ep2_cp2", sizes(1, 1, 2), 2}}) {
      parallel::ParallelOptions o;
      o.ep_size = layout.ep;
      o.sequence_parallel = layout.sequence_parallel;
      layout.sizes.ep = layout.ep;
      expect_parity(train_layout(std::string(model) + "_" + layout.name, layout.sizes, 1, o, 0, "", config), false,
                    1e-3, ref);
    }
    fs::remove_all(ref.dir);
  }
}

// Checkpoints of experts split over ep and inside over tp resume on one rank: token dispatch
// (ep 2 × tp 2) and router masking (ep 2 in tp 4, split inside over etp 2).
TEST(LossParity, CheckpointsOfMixtralExpertsSplitOverEpAndInsideResumeOnOneRank) {
  auto config = models::LlamaConfig::load(fs::path(MESHTRAIN_SOURCE_DIR) / "configs/mixtral-tiny");
  auto ref = train_layout("mixtral_ref", sizes(1, 1), 1, {}, 0, "", config);
  for (auto mode : {parallel::EpMode::AllToAll, parallel::EpMode::AllReduce}) {
    parallel::ParallelOptions o;
    o.ep_size = 2;
    o.ep_mode = mode;
    const bool in_tp = mode == parallel::EpMode::AllReduce;
    auto mesh_sizes = in_tp ? sizes(1, 1, 1, 1, 4) : sizes(1, 2, 1, 1, 2);
    mesh_sizes.ep = 2;
    mesh_sizes.ep_in_tp = in_tp;
    auto saving = train_layout(in_tp ? "mixtral_allreduce_saving" : "mixtral_alltoall_saving", mesh_sizes, 1, o,
                               /*save_steps=*/10, "", config);
    expect_parity(saving, /*keep_dir=*/true, 1e-3, ref);
    auto one = train_layout("mixtral_resumed", sizes(1, 1), 1, {}, 0, (saving.dir / "checkpoint-10").string(), config);
    EXPECT_EQ(one.losses.size(), 10u);
    expect_parity(one, false, 1e-3, ref);
    fs::remove_all(saving.dir);
  }
  fs::remove_all(ref.dir);
}

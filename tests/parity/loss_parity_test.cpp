// Data-parallel layouts against one rank: DDP, FSDP and HSDP on 2 and 4 ranks (threads over
// Gloo on loopback) train llama-tiny for 20 steps with the same global batch; every step's loss
// must be within 1e-5 relative of the single-rank run, and so must the final parameters.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "data/token_dataset.h"
#include "io/safetensors.h"
#include "support/run_ranks.h"
#include "train/trainer.h"

using namespace meshtrain;
using meshtrain::testing::run_ranks;
using meshtrain::testing::sizes;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kGlobalBatch = 8;
constexpr int kSteps = 20;

struct Run {
  std::vector<double> losses;
  fs::path dir;
};

Run train_layout(const std::string& name, const dist::MeshSizes& mesh_sizes, int64_t accum,
                 parallel::ParallelOptions options = {}) {
  static auto data = data::open_token_dataset(fs::path(MESHTRAIN_SOURCE_DIR) / "data/corpus.txt");
  data->max_token();  // cached before the ranks share the dataset
  Run run;
  run.dir = fs::temp_directory_path() / ("mt_parity_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(run.dir);
  run_ranks(mesh_sizes, [&](std::shared_ptr<dist::DeviceMesh> mesh) {
    auto model = std::make_shared<models::LlamaForCausalLM>(
        models::LlamaConfig::load(fs::path(MESHTRAIN_SOURCE_DIR) / "configs/llama-tiny"));
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
    args.save_steps = 0;
    args.output_dir = run.dir.string();
    train::Trainer trainer(pm, *data, 32, args);
    trainer.verbose = false;
    trainer.peak_flops = 1e9;
    auto records = trainer.train();
    if (mesh->rank() == 0)
      for (auto& r : records) run.losses.push_back(r.loss);
  });
  return run;
}

const Run& single() {
  static Run run = train_layout("single", sizes(1, 1), 2);
  return run;
}

void expect_parity(const Run& run) {
  const auto& ref = single();
  ASSERT_EQ(run.losses.size(), ref.losses.size());
  for (size_t s = 0; s < ref.losses.size(); ++s)
    EXPECT_NEAR(run.losses[s], ref.losses[s], 1e-5 * std::abs(ref.losses[s])) << "step " << s + 1;
  EXPECT_LT(ref.losses.back(), ref.losses.front() - 0.5);  // it trained
  io::SafetensorsFile a(ref.dir / "model.safetensors"), b(run.dir / "model.safetensors");
  ASSERT_EQ(a.names(), b.names());
  for (auto& name : a.names()) {
    auto x = a.read(name), y = b.read(name);
    EXPECT_LT(((x - y).abs().max() / x.abs().max()).item<double>(), 1e-5) << name;
  }
  fs::remove_all(run.dir);
}

}  // namespace

TEST(LossParity, Ddp2WithSmallBuckets) {
  parallel::ParallelOptions o;
  o.ddp_bucket_cap_mb = 0.05;  // several buckets for this model
  expect_parity(train_layout("ddp2", sizes(2, 1), 2, o));
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

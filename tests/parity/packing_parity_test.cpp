// Packed documents under every kind of sequence sharding: llama-tiny trains on documents of 1
// to 90 tokens (some longer than the 64-token window, so split) packed with document-causal
// attention, on one rank and under cp 2, Ulysses sp 2, cp 2 × sp 2, tp 2 with sequence
// parallelism and FSDP 2; every step's loss and gradient norm within 1e-5 relative of one rank.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "support/run_ranks.h"
#include "train/trainer.h"

using namespace meshtrain;
using meshtrain::testing::run_ranks;
using meshtrain::testing::sizes;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kEos = 0;
constexpr int kSteps = 6;

class Documents : public data::TokenDataset {
 public:
  Documents() {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(17);
    for (int d = 0; d < 120; ++d) {
      const int64_t length = 1 + at::randint(90, {1}, gen).item<int64_t>();
      auto ids = at::randint(1, 256, {length - 1}, gen);
      for (int64_t i = 0; i < length - 1; ++i) tokens_.push_back(ids[i].item<int64_t>());
      tokens_.push_back(kEos);
    }
  }
  int64_t size() const override { return static_cast<int64_t>(tokens_.size()); }
  void read_into(int64_t start, int64_t length, int64_t* out) const override {
    std::copy_n(tokens_.begin() + start, length, out);
  }

 private:
  std::vector<int64_t> tokens_;
};

struct Curve {
  std::vector<double> losses, grad_norms;
};

Curve train_packed(const std::string& name, const dist::MeshSizes& mesh_sizes, parallel::ParallelOptions options = {}) {
  static const Documents data;
  const auto config = models::LlamaConfig::load(fs::path(MESHTRAIN_SOURCE_DIR) / "configs/llama-tiny");
  const auto dir = fs::temp_directory_path() / ("mt_packing_" + std::to_string(::getpid()) + "_" + name);
  Curve curve;
  run_ranks(mesh_sizes, [&](std::shared_ptr<dist::DeviceMesh> mesh) {
    auto model = std::make_shared<models::LlamaForCausalLM>(config);
    model->init_weights(3);
    auto pm = std::make_shared<parallel::ParallelModel>(model, mesh, options);
    train::TrainingArguments args;
    args.per_device_train_batch_size = 4 / (mesh_sizes.dp_replicate * mesh_sizes.dp_shard);
    args.gradient_accumulation_steps = 2;
    args.learning_rate = 3e-3;
    args.max_steps = kSteps;
    args.save_steps = 0;
    args.output_dir = dir.string();
    train::Trainer trainer(pm, data, 64, args);
    trainer.verbose = false;
    trainer.peak_flops = 1e9;
    trainer.packing_eos_token_id = kEos;
    auto records = trainer.train();
    if (mesh->rank() != 0) return;
    for (auto& r : records) {
      curve.losses.push_back(r.loss);
      curve.grad_norms.push_back(r.grad_norm);
    }
  });
  fs::remove_all(dir);
  return curve;
}

const Curve& one_rank() {
  static const Curve curve = train_packed("single", sizes(1, 1));
  return curve;
}

void expect_parity(const Curve& run) {
  const auto& ref = one_rank();
  ASSERT_EQ(run.losses.size(), ref.losses.size());
  double worst = 0.0;
  for (size_t s = 0; s < ref.losses.size(); ++s) {
    EXPECT_NEAR(run.losses[s], ref.losses[s], 1e-5 * ref.losses[s]) << "step " << s + 1;
    EXPECT_NEAR(run.grad_norms[s], ref.grad_norms[s], 1e-5 * ref.grad_norms[s]) << "grad_norm of step " << s + 1;
    worst = std::max(worst, std::abs(run.losses[s] / ref.losses[s] - 1));
  }
  std::printf("largest relative loss difference %.2e over %zu steps\n", worst, ref.losses.size());
}

parallel::ParallelOptions tp_with_sequence_parallel() {
  parallel::ParallelOptions o;
  o.sequence_parallel = true;
  return o;
}

}  // namespace

TEST(PackingParity, OneRankLearns) {
  const auto& ref = one_rank();
  ASSERT_EQ(ref.losses.size(), static_cast<size_t>(kSteps));
  EXPECT_LT(ref.losses.back(), ref.losses.front());
}
TEST(PackingParity, ContextParallel2) { expect_parity(train_packed("cp2", sizes(1, 1, 2))); }
TEST(PackingParity, Ulysses2) { expect_parity(train_packed("sp2", sizes(1, 1, 1, 2))); }
TEST(PackingParity, ContextParallel2TimesUlysses2) { expect_parity(train_packed("cp2sp2", sizes(1, 1, 2, 2))); }
TEST(PackingParity, TensorParallel2WithSequenceParallel) {
  expect_parity(train_packed("tp2sp", sizes(1, 1, 1, 1, 2), tp_with_sequence_parallel()));
}
TEST(PackingParity, Fsdp2) { expect_parity(train_packed("fsdp2", sizes(1, 2))); }

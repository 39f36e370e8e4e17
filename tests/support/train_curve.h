// A short training run on a mesh of threads, for the parity tests: llama-tiny (or another
// config) with the same init and global batch on every layout; rank 0's losses and gradient
// norms come back.
#pragma once
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "support/run_ranks.h"
#include "train/trainer.h"

namespace meshtrain::testing {

struct Curve {
  std::vector<double> losses, grad_norms;
};

struct CurveRun {
  const data::TokenDataset* data = nullptr;
  std::string config = "configs/llama-tiny";  // under the source tree
  int64_t seq_len = 64;
  int64_t global_batch = 4, accumulation = 2;
  int steps = 6;
  std::function<void(train::Trainer&)> configure = [](train::Trainer&) {};
};

inline Curve train_curve(const std::string& name, const dist::MeshSizes& mesh_sizes,
                         const parallel::ParallelOptions& options, const CurveRun& how) {
  const auto config = models::LlamaConfig::load(std::filesystem::path(MESHTRAIN_SOURCE_DIR) / how.config);
  const auto dir = std::filesystem::temp_directory_path() / ("mt_curve_" + std::to_string(::getpid()) + "_" + name);
  Curve curve;
  run_ranks(mesh_sizes, [&](std::shared_ptr<dist::DeviceMesh> mesh) {
    auto model = std::make_shared<models::LlamaForCausalLM>(config);
    model->init_weights(3);
    auto pm = std::make_shared<parallel::ParallelModel>(model, mesh, options);
    train::TrainingArguments args;
    args.per_device_train_batch_size =
        how.global_batch / how.accumulation / (mesh_sizes.dp_replicate * mesh_sizes.dp_shard);
    args.gradient_accumulation_steps = how.accumulation;
    args.learning_rate = 3e-3;
    args.max_steps = how.steps;
    args.save_steps = 0;
    args.output_dir = dir.string();
    train::Trainer trainer(pm, *how.data, how.seq_len, args);
    trainer.verbose = false;
    trainer.peak_flops = 1e9;
    how.configure(trainer);
    auto records = trainer.train();
    if (mesh->rank() != 0) return;
    for (auto& r : records) {
      curve.losses.push_back(r.loss);
      curve.grad_norms.push_back(r.grad_norm);
    }
  });
  std::filesystem::remove_all(dir);
  return curve;
}

// Every step's loss within `tolerance` relative of the reference's, and its gradient norm within
// `grad_norm_tolerance` (default: the same); prints the largest loss difference.
inline void expect_curves_close(const Curve& run, const Curve& ref, double tolerance, double grad_norm_tolerance = 0) {
  if (grad_norm_tolerance == 0) grad_norm_tolerance = tolerance;
  ASSERT_EQ(run.losses.size(), ref.losses.size());
  double worst = 0.0;
  for (size_t s = 0; s < ref.losses.size(); ++s) {
    EXPECT_NEAR(run.losses[s], ref.losses[s], tolerance * ref.losses[s]) << "step " << s + 1;
    EXPECT_NEAR(run.grad_norms[s], ref.grad_norms[s], grad_norm_tolerance * ref.grad_norms[s])
        << "grad_norm of step " << s + 1;
    worst = std::max(worst, std::abs(run.losses[s] / ref.losses[s] - 1));
  }
  std::printf("largest relative loss difference %.2e over %zu steps\n", worst, ref.losses.size());
}

}  // namespace meshtrain::testing

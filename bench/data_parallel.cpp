// Data-parallel communication and memory: for 1, 2 and 4 ranks (threads over Gloo on
// loopback) with DDP and FSDP, trains llama-small steps and reports per rank the bytes its
// gradient / parameter collectives sent per step against the ring formulas (DDP
// 2(n-1)/n · gradient bytes, FSDP 3(n-1)/n · parameter bytes), the bytes of parameters,
// gradients and AdamW state it holds, and for DDP the time the optimizer step waited for the
// gradient all-reduces (exposed) against the time the same all-reduces take alone: the hidden
// share is 1 - exposed / alone. Run: build/bench_data_parallel [steps]
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <mutex>

#include "data/token_dataset.h"
#include "dist/collectives.h"
#include "nn/causal_lm_loss.h"
#include "support/run_ranks.h"
#include "parallel/ddp.h"
#include "train/adamw.h"
#include "train/trainer.h"

using namespace meshtrain;
namespace fs = std::filesystem;

namespace {

struct Result {
  double bytes_per_step = 0, formula = 0, state_bytes = 0, step_s = 0;
  double exposed_s = -1, alone_s = -1;  // DDP: finish() waiting vs the same all-reduces alone, per step
};

uint64_t tensor_bytes(const at::Tensor& t) { return static_cast<uint64_t>(t.numel()) * t.element_size(); }

Result measure(const dist::MeshSizes& sizes, int steps, double bucket_cap_mb) {
  Result result;
  std::mutex mu;
  testing::run_ranks(sizes, [&](std::shared_ptr<dist::DeviceMesh> mesh) {
    at::set_num_threads(1);
    auto config = models::LlamaConfig::load(fs::path(MESHTRAIN_SOURCE_DIR) / "configs/llama-small");
    auto model = std::make_shared<models::LlamaForCausalLM>(config);
    model->init_weights(1);
    uint64_t param_bytes = 0;
    for (auto& [name, p] : model->named_params()) param_bytes += tensor_bytes(p);
    parallel::ParallelOptions options;
    options.ddp_bucket_cap_mb = bucket_cap_mb;
    auto pm = std::make_shared<parallel::ParallelModel>(model, mesh, options);
    train::AdamW opt(model->named_params(), {});
    const bool fsdp = sizes.dp_shard > 1;
    auto& group = mesh->group(fsdp ? MeshDim::DpShard : MeshDim::DpReplicate);
    const int n = group.size();
    const int64_t micro = 8 / n;
    at::manual_seed(mesh->rank());
    double seconds = 0;
    for (int s = 0; s <= steps; ++s) {
      if (s == 1) group.reset_bytes_sent();  // step 0 warms up
      auto ids = at::randint(0, config.vocab_size, {micro, 256});
      auto t0 = std::chrono::steady_clock::now();
      parallel::step_loss(*pm, {{ids, nn::shift_labels(ids)}}, parallel::Pass::ForwardBackward);
      pm->clip_grad_norm(1.0);
      opt.step(1e-3);
      opt.zero_grad();
      if (s > 0) seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    // Held state after a step: parameters + AdamW moments (+ gradients during the step).
    uint64_t held = 0;
    for (auto& [name, p] : model->named_params()) held += 2 * tensor_bytes(p);  // param + grad
    for (auto& [name, t] : opt.state_tensors()) held += tensor_bytes(t);
    const double bytes_per_step = static_cast<double>(group.bytes_sent()) / steps;
    double exposed = -1, alone = -1;
    if (!fsdp && n > 1) {
      // The same bytes all-reduced with nothing to hide behind, against what finish() waited.
      auto flat = at::zeros({static_cast<int64_t>(param_bytes / 4)});
      auto t0 = std::chrono::steady_clock::now();
      for (int s = 0; s < steps; ++s) dist::all_reduce_(group, flat);
      alone = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / steps;
      exposed = pm->ddp()->exposed_wait_seconds() / (steps + 1);
    }
    if (mesh->rank() == 0) {
      std::lock_guard<std::mutex> lock(mu);
      result.bytes_per_step = bytes_per_step;
      const double share = n > 1 ? double(n - 1) / n : 0.0;
      result.formula = (fsdp ? 3 : 2) * share * static_cast<double>(param_bytes);
      result.state_bytes = static_cast<double>(held);
      result.exposed_s = exposed;
      result.alone_s = alone;
      result.step_s = seconds / steps;
    }
  });
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 5;
  std::printf("llama-small, seq 256, global batch 8, fp32, %d steps after one warm-up; one thread per rank\n", steps);
  std::printf("%-10s %6s %16s %16s %8s %20s %10s %10s %10s\n", "layout", "ranks", "bytes/step/rank", "formula",
              "ratio", "params+grads+adam", "exposed s", "alone s", "step s");
  struct Layout {
    const char* name;
    dist::MeshSizes sizes;
    double bucket_cap_mb;
  };
  for (auto& [name, sizes, cap] :
       {Layout{"single", testing::sizes(1, 1), 25}, Layout{"ddp-25MB", testing::sizes(2, 1), 25},
        Layout{"ddp-1MB", testing::sizes(2, 1), 1}, Layout{"ddp-25MB", testing::sizes(4, 1), 25},
        Layout{"ddp-1MB", testing::sizes(4, 1), 1}, Layout{"fsdp", testing::sizes(1, 2), 25},
        Layout{"fsdp", testing::sizes(1, 4), 25}}) {
    auto r = measure(sizes, steps, cap);
    std::printf("%-10s %6lld %16.0f %16.0f %8.3f %17.2f MB %10.4f %10.4f %10.3f\n", name, (long long)sizes.product(),
                r.bytes_per_step, r.formula, r.formula > 0 ? r.bytes_per_step / r.formula : 0.0, r.state_bytes / 1e6,
                r.exposed_s, r.alone_s, r.step_s);
  }
  return 0;
}

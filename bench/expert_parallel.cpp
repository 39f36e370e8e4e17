// Mixture of experts: training throughput of llama-small with 8 experts, top-2, expert
// intermediate 344 (Mixtral layout) against the dense llama-small on one rank, and the bytes the
// token-dispatch all-to-alls send per step and rank under expert parallelism (ep 2 and 4 over
// dp_shard, threads over Gloo on loopback) against the formula: per MoE layer, dispatch and
// combine each move k·T·D per rank forward, and the same backward (rows routed to the rank's own
// experts stay home, so with balanced routing about (ep − 1)/ep of it is sent).
// Run: build/bench_expert_parallel [steps]
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <mutex>

#include "llama_small.h"
#include "nn/causal_lm_loss.h"
#include "support/run_ranks.h"
#include "train/adamw.h"
#include "train/trainer.h"

using namespace meshtrain;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kGlobalBatch = 8, kSeq = 256;

struct Result {
  double tokens_per_s = 0, bytes_per_step = 0, formula = 0;
};

Result measure(bool moe, int64_t ep, int steps) {
  Result result;
  std::mutex mu;
  auto sizes = testing::sizes(1, ep);
  sizes.ep = ep;
  testing::run_ranks(sizes, [&](std::shared_ptr<dist::DeviceMesh> mesh) {
    at::set_num_threads(ep == 1 ? 2 : 1);
    const auto config = bench::llama_small(moe);
    auto model = std::make_shared<models::LlamaForCausalLM>(config);
    parallel::ParallelOptions options;
    options.ep_size = ep;
    auto pm = std::make_shared<parallel::ParallelModel>(model, mesh, options);
    model->init_weights(1);
    train::AdamW opt(model->named_params(), {});
    auto& group = mesh->group(MeshDim::Ep);
    const int64_t micro = kGlobalBatch / ep;
    at::manual_seed(mesh->rank());
    double seconds = 0;
    for (int s = 0; s <= steps; ++s) {
      if (s == 1) group.reset_bytes_sent();  // step 0 warms up
      auto ids = at::randint(0, config.vocab_size, {micro, kSeq});
      auto t0 = std::chrono::steady_clock::now();
      parallel::step_loss(*pm, {{ids, nn::shift_labels(ids)}}, parallel::Pass::ForwardBackward);
      pm->clip_grad_norm(1.0);
      opt.step(1e-3);
      opt.zero_grad();
      if (s > 0) seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    if (mesh->rank() == 0) {
      std::lock_guard<std::mutex> lock(mu);
      result.tokens_per_s = static_cast<double>(kGlobalBatch * kSeq) / (seconds / steps);
      result.bytes_per_step = static_cast<double>(group.bytes_sent()) / steps;
      if (moe && ep > 1) {
        const double k = static_cast<double>(config.moe->num_experts_per_tok), T = static_cast<double>(micro * kSeq);
        result.formula = static_cast<double>(config.num_hidden_layers) * 4 * k * T * config.hidden_size * 4;
      }
    }
  });
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 3;
  std::printf("llama-small (dense) and with 8 experts, top-2, expert intermediate 344; global batch %lld x seq %lld, "
              "fp32, %d steps after a warm-up; 2 threads on one rank, one thread per rank otherwise\n",
              (long long)kGlobalBatch, (long long)kSeq, steps);
  std::printf("%-8s %4s %12s %18s %16s %8s\n", "model", "ep", "tokens/s", "all-to-all B/step", "formula k·T·D", "ratio");
  for (auto [moe, ep] : {std::pair<bool, int64_t>{false, 1}, {true, 1}, {true, 2}, {true, 4}}) {
    auto r = measure(moe, ep, steps);
    std::printf("%-8s %4lld %12.0f %18.0f %16.0f %8.3f\n", moe ? "moe" : "dense", (long long)ep, r.tokens_per_s,
                r.bytes_per_step, r.formula, r.formula > 0 ? r.bytes_per_step / r.formula : 0.0);
  }
  return 0;
}

// Tensor and sequence parallelism: for tp 1, 2 and 4 (threads over Gloo on loopback), with and
// without Megatron sequence parallelism and vocab-parallel loss, with the MLP packed, and for the
// MoE llama-small with its experts split inside, trains steps and reports per rank the bytes its
// tp collectives sent per step against Megatron's count (per layer, forward + backward, four
// all-reduces of B·T·D, or the same volume as all-gathers and reduce-scatters with sequence
// parallelism; MoE layers add the routing weights' all-reduce in backward) plus the output
// layer's own traffic, the parameters a rank holds, and the activation memory a rank holds
// between forward and backward (heap in use, glibc mallinfo2, averaged over the ranks).
// Run: build/bench_tensor_parallel [steps]
#include <malloc.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <mutex>

#include "dist/collectives.h"
#include "llama_small.h"
#include "nn/causal_lm_loss.h"
#include "support/run_ranks.h"
#include "train/adamw.h"
#include "train/trainer.h"

using namespace meshtrain;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kBatch = 4, kSeq = 512;

struct Result {
  double bytes_per_step = 0, megatron = 0, head = 0, param_bytes = 0, activation_bytes = 0, step_s = 0;
};

struct Layout {
  const char* name;
  int64_t tp;
  bool sp = false, loss = false, packed = false, moe = false;
};

double heap_in_use() {
  auto m = mallinfo2();
  return static_cast<double>(m.uordblks + m.hblkhd);
}

Result measure(const Layout& layout, int steps) {
  const int64_t tp = layout.tp;
  const bool sequence_parallel = layout.sp, loss_parallel = layout.loss;
  Result result;
  std::mutex mu;
  double activation_sum = 0;
  testing::run_ranks(testing::sizes(1, 1, 1, 1, tp), [&](std::shared_ptr<dist::DeviceMesh> mesh) {
    at::set_num_threads(1);
    const auto config = bench::llama_small(layout.moe);
    auto model = std::make_shared<models::LlamaForCausalLM>(config);
    parallel::ParallelOptions options;
    options.sequence_parallel = sequence_parallel;
    options.loss_parallel = loss_parallel;
    if (layout.packed) {
      std::map<std::string, std::string> rules;
      const auto defaults = parallel::TpPlan::llama_default();
      for (auto& [k, v] : defaults.rules()) rules[k] = parallel::tp_style_name(v);
      rules["model.layers.*.mlp.gate_proj"] = rules["model.layers.*.mlp.up_proj"] = "packed_colwise";
      rules["model.layers.*.mlp.down_proj"] = "packed_rowwise";
      options.tp_plan = parallel::TpPlan(rules);
    }
    auto pm = std::make_shared<parallel::ParallelModel>(model, mesh, options);
    model->init_weights(1);
    train::AdamW opt(model->named_params(), {});
    auto& group = mesh->group(MeshDim::Tp);
    auto& world = mesh->group(MeshDim::World);
    at::manual_seed(7);
    double seconds = 0;
    for (int s = 0; s <= steps; ++s) {
      if (s == 1) group.reset_bytes_sent();  // step 0 warms up
      auto ids = at::randint(0, config.vocab_size, {kBatch, kSeq});
      auto targets = nn::shift_labels(ids);
      auto t0 = std::chrono::steady_clock::now();
      // Heap in use before and after the forward, read while every rank waits at a barrier.
      dist::barrier(world);
      const double before = heap_in_use();
      dist::barrier(world);
      auto loss = pm->loss_sum(ids, targets);
      dist::barrier(world);
      const double after = heap_in_use();
      dist::barrier(world);
      (loss / static_cast<double>(kBatch * (kSeq - 1))).backward();
      pm->finish_backward();
      pm->clip_grad_norm(1.0);
      opt.step(1e-3);
      opt.zero_grad();
      if (s > 0) seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (s == steps && mesh->rank() == 0) activation_sum = (after - before) / static_cast<double>(tp);
    }
    if (mesh->rank() == 0) {
      std::lock_guard<std::mutex> lock(mu);
      const double n = static_cast<double>(tp), share = (n - 1) / n;
      const double btd = 4.0 * kBatch * kSeq * config.hidden_size, bt = 4.0 * kBatch * kSeq;
      result.bytes_per_step = static_cast<double>(group.bytes_sent()) / steps;
      result.megatron = config.num_hidden_layers * 4 * 2 * share * btd;
      if (config.moe) result.megatron += config.num_hidden_layers * 2 * share * bt * config.moe->num_experts_per_tok;
      // The output layer: the logits all-gathered (or, vocab-parallel, the max and the sums of
      // exponentials and target logits all-reduced), and the input gradient all-reduced (with
      // sequence parallelism, the input all-gathered and its gradient reduce-scattered). With
      // sequence parallelism the replicated embedding's output gradient is all-gathered too.
      result.head = (loss_parallel ? 3 * 2 * share * bt : share * bt * config.vocab_size) + 2 * share * btd +
                    (sequence_parallel ? share * btd : 0.0);
      result.step_s = seconds / steps;
      for (auto& [name, p] : model->named_params()) result.param_bytes += static_cast<double>(p.numel()) * 4;
      result.activation_bytes = activation_sum;
    }
  });
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 3;
  std::printf("llama-small, batch %lld x seq %lld, fp32, %d steps after one warm-up; one thread per rank\n",
              (long long)kBatch, (long long)kSeq, steps);
  std::printf("%-26s %4s %16s %16s %14s %8s %14s %16s %8s\n", "layout", "tp", "bytes/step/rank", "megatron layers",
              "output layer", "ratio", "params/rank", "activations/rank", "step s");
  for (auto& layout :
       {Layout{"single", 1}, Layout{"tp", 2}, Layout{"tp+sp", 2, true}, Layout{"tp+sp+loss_parallel", 2, true, true},
        Layout{"tp, packed mlp", 2, false, false, true}, Layout{"tp", 4}, Layout{"tp+sp", 4, true},
        Layout{"tp+sp+loss_parallel", 4, true, true}, Layout{"moe single", 1, false, false, false, true},
        Layout{"moe tp, experts split", 2, false, false, false, true},
        Layout{"moe tp, experts split", 4, false, false, false, true}}) {
    auto r = measure(layout, steps);
    const double expected = r.megatron + r.head;
    std::printf("%-26s %4lld %16.0f %16.0f %14.0f %8.3f %11.2f MB %13.2f MB %8.3f\n", layout.name, (long long)layout.tp,
                r.bytes_per_step, r.megatron, r.head, expected > 0 ? r.bytes_per_step / expected : 0.0,
                r.param_bytes / 1e6, r.activation_bytes / 1e6, r.step_s);
  }
  return 0;
}

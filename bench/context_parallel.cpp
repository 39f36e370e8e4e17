// Context (ring) and Ulysses parallelism on long sequences: llama-tiny, one sequence of 4096 and
// of 16384 tokens per step, for cp 1, 2, 4 and sp 2, 4 (threads over Gloo on loopback). Reports
// per rank the activation memory held between forward and backward (heap in use, glibc
// mallinfo2, averaged over the ranks), the tokens per second of the whole step, and the bytes
// the cp / sp groups sent per step against the formulas: ring, per layer, K and V sent around
// cp − 1 hops forward, again in backward with the fp32 dK/dV sent cp hops home; Ulysses, per
// layer, all-to-alls of q, k, v, the output and its log-sum-exp forward and of their gradients
// backward, each sending (sp − 1)/sp of the local tensor. Run: build/bench_context_parallel
#include <malloc.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <mutex>

#include "dist/collectives.h"
#include "nn/causal_lm_loss.h"
#include "support/run_ranks.h"
#include "train/adamw.h"
#include "train/trainer.h"

using namespace meshtrain;
namespace fs = std::filesystem;

namespace {

struct Result {
  double activation_bytes = 0, tokens_per_s = 0, bytes_per_step = 0, formula = 0;
};

double heap_in_use() {
  auto m = mallinfo2();
  return static_cast<double>(m.uordblks + m.hblkhd);
}

Result measure(int64_t cp, int64_t sp, int64_t seq_len) {
  Result result;
  std::mutex mu;
  testing::run_ranks(testing::sizes(1, 1, cp, sp), [&](std::shared_ptr<dist::DeviceMesh> mesh) {
    at::set_num_threads(1);
    auto config = models::LlamaConfig::load(fs::path(MESHTRAIN_SOURCE_DIR) / "configs/llama-tiny");
    auto model = std::make_shared<models::LlamaForCausalLM>(config);
    auto pm = std::make_shared<parallel::ParallelModel>(model, mesh, parallel::ParallelOptions{});
    model->init_weights(1);
    train::AdamW opt(model->named_params(), {});
    auto& world = mesh->group(MeshDim::World);
    auto& cp_group = mesh->group(MeshDim::Cp);
    auto& sp_group = mesh->group(MeshDim::Sp);
    at::manual_seed(7);
    double seconds = 0, activations = 0;
    for (int s = 0; s < 2; ++s) {  // step 0 warms up
      cp_group.reset_bytes_sent();
      sp_group.reset_bytes_sent();
      auto ids = at::randint(0, config.vocab_size, {1, seq_len});
      dist::barrier(world);
      auto t0 = std::chrono::steady_clock::now();
      dist::barrier(world);
      const double before = heap_in_use();
      dist::barrier(world);
      auto loss = pm->loss_sum(ids, nn::shift_labels(ids));
      dist::barrier(world);
      activations = (heap_in_use() - before) / static_cast<double>(cp * sp);
      dist::barrier(world);
      (loss / static_cast<double>(seq_len - 1)).backward();
      pm->finish_backward();
      pm->clip_grad_norm(1.0);
      opt.step(1e-3);
      opt.zero_grad();
      dist::barrier(world);
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    if (mesh->rank() == 0) {
      std::lock_guard<std::mutex> lock(mu);
      const double L = static_cast<double>(config.num_hidden_layers), d = static_cast<double>(config.head_dim);
      const double H = static_cast<double>(config.num_attention_heads);
      const double local_tokens = static_cast<double>(seq_len) / static_cast<double>(cp * sp);
      // Ulysses sends kv heads replicated up to sp when there are fewer of them.
      const double Hkv = static_cast<double>(std::max(config.num_key_value_heads, sp));
      double formula = 0;
      if (cp > 1) {
        // K and V of this rank's tokens (after Ulysses: T/cp tokens, its heads).
        const double kv_local = 2 * 4 * (static_cast<double>(seq_len) / cp) * Hkv / static_cast<double>(sp) * d;
        formula += L * ((cp - 1) * kv_local + (cp - 1) * kv_local + cp * kv_local);
      }
      if (sp > 1) {
        const double share = static_cast<double>(sp - 1) / sp;
        const double q = 4 * local_tokens * H * d, kv = 4 * local_tokens * Hkv * d, lse = 4 * local_tokens * H;
        formula += L * share * (2 * (q + 2 * kv + q) + lse);
      }
      result.activation_bytes = activations;
      result.tokens_per_s = static_cast<double>(seq_len) / seconds;
      result.bytes_per_step = static_cast<double>(cp_group.bytes_sent() + sp_group.bytes_sent());
      result.formula = formula;
    }
  });
  return result;
}

}  // namespace

int main() {
  std::printf("llama-tiny, one sequence per step, fp32, one thread per rank; one step after a warm-up\n");
  std::printf("%6s %4s %4s %18s %12s %16s %16s %8s\n", "seq", "cp", "sp", "activations/rank", "tokens/s",
              "bytes/step/rank", "formula", "ratio");
  for (int64_t seq : {4096, 16384})
    for (auto [cp, sp] : {std::pair<int64_t, int64_t>{1, 1}, {2, 1}, {4, 1}, {1, 2}, {1, 4}}) {
      auto r = measure(cp, sp, seq);
      std::printf("%6lld %4lld %4lld %15.2f MB %12.0f %16.0f %16.0f %8.3f\n", (long long)seq, (long long)cp,
                  (long long)sp, r.activation_bytes / 1e6, r.tokens_per_s, r.bytes_per_step, r.formula,
                  r.formula > 0 ? r.bytes_per_step / r.formula : 0.0);
    }
  return 0;
}

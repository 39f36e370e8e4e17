// Packed documents against plain causal rows at equal tokens: llama-small, one row of 4096 tokens,
// a training step (forward, backward) with every row one document, then packed with documents of
// mean length 2048, 512 and 128 (lengths uniform in [L/2, 3L/2], document-causal attention); and
// the attention core alone (forward and backward) on the same layouts. Document-causal attention
// computes only the blocks documents reach, so shorter documents cost less.
// Run: build/bench_packed_documents [steps]
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "llama_small.h"
#include "dist/device_mesh.h"
#include "nn/attention_core.h"
#include "nn/causal_lm_loss.h"
#include "nn/document_mask.h"
#include "parallel/parallelize.h"
#include "parallel/step_loss.h"

using namespace meshtrain;

namespace {

constexpr int64_t kSeq = 4096;

// position_ids [1, kSeq] of documents with lengths uniform in [mean/2, 3·mean/2]; undefined for
// mean 0 (one causal row).
at::Tensor packed_positions(int64_t mean) {
  if (mean == 0) return {};
  auto gen = at::make_generator<at::CPUGeneratorImpl>(mean);
  std::vector<int64_t> pos;
  while (static_cast<int64_t>(pos.size()) < kSeq) {
    const int64_t n = mean / 2 + at::randint(mean + 1, {1}, gen).item<int64_t>();
    for (int64_t i = 0; i < n && static_cast<int64_t>(pos.size()) < kSeq; ++i) pos.push_back(i);
  }
  return at::tensor(pos, at::kLong).unsqueeze(0);
}

template <typename Fn>
double seconds_per_call(Fn&& fn, int steps) {
  fn();  // warm-up
  const auto start = std::chrono::steady_clock::now();
  for (int s = 0; s < steps; ++s) fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / steps;
}

}  // namespace

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::stoi(argv[1]) : 3;
  auto config = bench::llama_small(false);
  auto model = std::make_shared<models::LlamaForCausalLM>(config);
  model->init_weights(1);
  parallel::ParallelModel pm(model, std::make_shared<dist::DeviceMesh>(dist::MeshSizes{}, 0), {});
  at::manual_seed(0);
  auto ids = at::randint(0, config.vocab_size, {1, kSeq});
  const auto H = config.num_attention_heads, Hkv = config.num_key_value_heads, d = config.head_dim;
  auto q = at::randn({1, H, kSeq, d}).requires_grad_(), k = at::randn({1, Hkv, kSeq, d}).requires_grad_(),
       v = at::randn({1, Hkv, kSeq, d}).requires_grad_();
  std::printf("llama-small, 1 x %lld tokens, %d threads, %d steps\n", (long long)kSeq, at::get_num_threads(), steps);
  std::printf("%-22s %12s %8s %16s %8s\n", "documents", "step tok/s", "ratio", "attention ms", "ratio");
  double base_step = 0, base_attention = 0;
  for (int64_t mean : {0, 2048, 512, 128}) {
    const auto positions = packed_positions(mean);
    const auto documents = positions.defined() ? nn::packed_document_ids(positions) : at::Tensor();
    auto targets = nn::shift_labels(ids);
    if (positions.defined()) targets.masked_fill_(at::roll(positions, -1, 1).eq(0), nn::kIgnoreIndex);
    const std::vector<parallel::MicroBatch> batch = {{ids, targets, positions}};
    const double step = seconds_per_call([&] {
      parallel::step_loss(pm, batch, parallel::Pass::ForwardBackward);
      for (auto& [name, p] : model->named_params()) p.mutable_grad() = at::Tensor();
    }, steps);
    const double attention = seconds_per_call([&] {
      auto res = nn::LocalCausalAttention().forward(q, k, v, 0.125, documents);
      res.out.sum().backward();
    }, steps);
    if (mean == 0) base_step = step, base_attention = attention;
    const std::string name = mean == 0 ? "one (causal)" : "mean " + std::to_string(mean) + " (" +
                                                             std::to_string(documents[0][-1].item<int64_t>() + 1) + ")";
    std::printf("%-22s %12.0f %7.2fx %16.1f %7.2fx\n", name.c_str(), kSeq / step, base_step / step, attention * 1e3,
                base_attention / attention);
  }
  return 0;
}

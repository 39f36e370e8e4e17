// meshtrain info: the size and cost of a model config, and the runtime this process uses
// (threads, BLAS), to check that one thread pool is not spinning against another, with the fp32
// and bf16 matmul rates it measures.
#include <ATen/Parallel.h>

#include <cstdio>
#include <iostream>

#include "models/llama_config.h"
#include "tools/commands.h"
#include "tools/flags.h"
#include "util/check.h"
#include "util/gemm_rate.h"

namespace meshtrain::tools {

int run_info(const Args& argv) {
  Flags flags("info", {{"seq_len", "sequence length for the FLOPs count (default 256)"}}, argv);
  if (flags.help_requested()) {
    std::cout << flags.usage("CONFIG (config.json or its directory)");
    return 0;
  }
  if (flags.positional().size() != 1)
    throw UsageError("meshtrain info: expects one CONFIG argument (config.json or its directory)");
  auto c = models::LlamaConfig::load(resolve_path(flags.positional()[0]));
  const int64_t seq = flags.get_int("seq_len", 256);
  std::printf("layers %lld, hidden %lld, heads %lld (kv %lld, head_dim %lld), intermediate %lld, vocab %lld%s\n",
              (long long)c.num_hidden_layers, (long long)c.hidden_size, (long long)c.num_attention_heads,
              (long long)c.num_key_value_heads, (long long)c.head_dim, (long long)c.intermediate_size,
              (long long)c.vocab_size, c.tie_word_embeddings ? ", tied embeddings" : "");
  if (c.moe)
    std::printf("%s: %lld experts, top-%lld, expert intermediate %lld, %lld of %lld layers sparse\n",
                c.model_type.c_str(), (long long)c.moe->num_experts, (long long)c.moe->num_experts_per_tok,
                (long long)c.moe->intermediate_size, (long long)c.num_moe_layers(), (long long)c.num_hidden_layers);
  std::printf("parameters: %lld\n", (long long)c.num_parameters());
  std::printf("flops_per_token: %.6g (training, seq_len %lld)\n", c.flops_per_token(seq), (long long)seq);
  std::printf("\nruntime:\n%s", at::get_parallel_info().c_str());
  // What --bf16 can gain here: on CPUs without bf16 matrix units its GEMMs may be slower.
  std::printf("matmul 2048^3 on %d threads: fp32 %.1f GFLOP/s, bf16 %.1f GFLOP/s\n", at::get_num_threads(),
              util::measure_gemm_flops() / 1e9, util::measure_gemm_flops(2048, 3, true) / 1e9);
  return 0;
}

}  // namespace meshtrain::tools

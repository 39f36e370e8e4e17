// meshtrain info: the size and cost of a model config, and the runtime this process uses
// (threads, BLAS), to check that one thread pool is not spinning against another, with the fp32
// and bf16 matmul rates it measures.
#include <ATen/Parallel.h>

#include <cstdio>
#include <iostream>

#include "dist/device.h"
#include "models/llama_config.h"
#include "tools/commands.h"
#include "tools/flags.h"
#include "util/check.h"
#include "util/gemm_rate.h"

namespace meshtrain::tools {

int run_info(const Args& argv) {
  Flags flags("info",
              {{"seq_len", "sequence length for the FLOPs count (default 256)"},
               {"device", "cpu | cuda: where to measure the matmul rates (default cuda when a GPU is visible)"}},
              argv);
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
  std::printf("%s", dist::describe_cuda().c_str());
  const auto device = dist::choose_device(flags.get("device", ""), "", dist::RankEnv{}).device;
  dist::bind_device({device});
  // What --bf16 can gain here: on CPUs without bf16 matrix units its GEMMs may be slower.
  const int n = device.is_cuda() ? 8192 : 2048;
  const std::string where = device.is_cuda() ? device.str() : str_cat(at::get_num_threads(), " threads");
  std::printf("matmul %d^3 on %s: fp32 %.1f GFLOP/s, bf16 %.1f GFLOP/s\n", n, where.c_str(),
              util::measure_gemm_flops(n, 3, false, device) / 1e9, util::measure_gemm_flops(n, 3, true, device) / 1e9);
  return 0;
}

}  // namespace meshtrain::tools

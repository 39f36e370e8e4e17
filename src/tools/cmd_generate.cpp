// meshtrain generate: continues a prompt, encoded and decoded by the model's tokenizer.json (else
// the byte tokenizer), greedily (--top_k 0) or by sampling from the top k tokens at --temperature.
// On a mesh every rank runs the same forwards with the same sampling seed, so all feed the same
// tokens; rank 0 prints.
#include <iostream>

#include "data/byte_tokenizer.h"
#include "data/tokenizer.h"
#include "tools/commands.h"
#include "tools/flags.h"
#include "tools/parallel_flags.h"
#include "tools/text_data.h"
#include "util/check.h"

namespace meshtrain::tools {

int run_generate(const Args& argv) {
  std::vector<FlagSpec> specs = {{"model_name_or_path", "HF checkpoint directory (required)"},
                                 {"prompt", "text to continue (required)"},
                                 {"max_new_tokens", "tokens to generate (default 100)"},
                                 {"top_k", "sample from the k most likely tokens; 0 = greedy (default 0)"},
                                 {"temperature", "sampling temperature (default 1.0)"},
                                 {"seed", "sampling seed (default 0)"},
                                 {"tokenizer_name", "HF tokenizer directory (default: the model's tokenizer.json, "
                                                    "else the byte tokenizer)"}};
  for (auto& spec : parallel_flag_specs()) specs.push_back(spec);
  Flags flags("generate", specs, argv);
  if (flags.help_requested()) {
    std::cout << flags.usage("--model_name_or_path DIR --prompt TEXT [--top_k K]");
    return 0;
  }
  auto options = parallel_options_from(flags);
  // Prompts of any length, and whole logits to sample from: the training-only layouts are off.
  options.sequence_parallel = options.loss_parallel = false;
  const auto sizes = mesh_sizes_from(flags);
  if (sizes.cp > 1 || sizes.sp > 1)
    throw UsageError(str_cat("meshtrain generate: prompts grow one token at a time, so the sequence is not sharded; "
                             "use cp_size and sp_size 1 (got ", sizes.cp, " and ", sizes.sp, ")"));
  auto runtime = start_runtime_from(flags);
  auto parallel_model = parallel::load_pretrained_parallel(flags.require("model_name_or_path"), runtime.mesh, options);
  if (runtime.env.rank == 0) report_tp_plan(*parallel_model);
  auto* model = &parallel_model->model();
  const auto prompt = flags.require("prompt");
  const int64_t new_tokens = flags.get_int("max_new_tokens", 100);
  const int64_t top_k = flags.get_int("top_k", 0);
  const double temperature = flags.get_double("temperature", 1.0);
  if (new_tokens < 0 || top_k < 0 || temperature <= 0)
    throw UsageError("meshtrain generate: --max_new_tokens and --top_k must be >= 0 and --temperature > 0");
  MT_CHECK(!prompt.empty(), "--prompt must not be empty");
  std::optional<data::Tokenizer> tokenizer;
  if (auto dir = tokenizer_from(flags)) tokenizer = data::Tokenizer::load(*dir);
  const int64_t vocab = model->config().vocab_size;
  MT_CHECK(tokenizer || vocab >= data::kByteVocabSize, "generate uses the byte tokenizer (the model directory has no "
           "tokenizer.json), which needs vocab_size >= 256; the model has ", vocab);
  MT_CHECK(!tokenizer || tokenizer->vocab_size() <= vocab, "the tokenizer has ", tokenizer ? tokenizer->vocab_size() : 0,
           " ids, more than the model's vocab_size ", vocab);

  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(flags.get_int("seed", 0)));
  std::vector<int64_t> ids;
  if (tokenizer) {
    for (int32_t id : tokenizer->encode(prompt, /*add_special_tokens=*/true)) ids.push_back(id);
  } else {
    ids = data::encode_bytes(prompt);
  }
  const int64_t window = model->config().max_position_embeddings;
  at::NoGradGuard no_grad;
  for (int64_t i = 0; i < new_tokens; ++i) {
    const int64_t start = std::max<int64_t>(0, static_cast<int64_t>(ids.size()) - window);
    auto input = at::tensor(std::vector<int64_t>(ids.begin() + start, ids.end()), at::kLong).unsqueeze(0);
    auto logits = parallel_model->forward(input)[0][-1].to(at::kFloat);
    int64_t next;
    if (top_k == 0) {
      next = logits.argmax().item<int64_t>();
    } else {
      auto [values, indices] = logits.topk(std::min(top_k, logits.size(0)));
      auto probs = at::softmax(values / temperature, -1);
      next = indices[at::multinomial(probs, 1, false, gen).item<int64_t>()].item<int64_t>();
    }
    ids.push_back(next);
  }
  if (runtime.env.rank == 0)
    std::cout << (tokenizer ? tokenizer->decode(std::vector<int32_t>(ids.begin(), ids.end()), /*skip_special_tokens=*/true)
                            : data::decode_bytes(ids))
              << "\n";
  return 0;
}

}  // namespace meshtrain::tools

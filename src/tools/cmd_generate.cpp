// meshtrain generate: continues a prompt with the byte tokenizer, greedily (--top_k 0) or by
// sampling from the top k tokens at --temperature.
#include <iostream>

#include "data/byte_tokenizer.h"
#include "models/hf_weights.h"
#include "tools/commands.h"
#include "tools/flags.h"
#include "util/check.h"

namespace meshtrain::tools {

int run_generate(const Args& argv) {
  Flags flags("generate", {{"model_name_or_path", "HF checkpoint directory (required)"},
                           {"prompt", "text to continue (required)"},
                           {"max_new_tokens", "tokens to generate (default 100)"},
                           {"top_k", "sample from the k most likely tokens; 0 = greedy (default 0)"},
                           {"temperature", "sampling temperature (default 1.0)"},
                           {"seed", "sampling seed (default 0)"}},
              argv);
  if (flags.help_requested()) {
    std::cout << flags.usage("--model_name_or_path DIR --prompt TEXT [--top_k K]");
    return 0;
  }
  auto model = models::load_pretrained(flags.require("model_name_or_path"));
  const auto prompt = flags.require("prompt");
  const int64_t new_tokens = flags.get_int("max_new_tokens", 100);
  const int64_t top_k = flags.get_int("top_k", 0);
  const double temperature = flags.get_double("temperature", 1.0);
  if (new_tokens < 0 || top_k < 0 || temperature <= 0)
    throw UsageError("meshtrain generate: --max_new_tokens and --top_k must be >= 0 and --temperature > 0");
  MT_CHECK(model->config().vocab_size >= data::kByteVocabSize, "generate uses the byte tokenizer, "
           "which needs vocab_size >= 256; the model has ", model->config().vocab_size);
  MT_CHECK(!prompt.empty(), "--prompt must not be empty");

  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(flags.get_int("seed", 0)));
  auto ids = data::encode_bytes(prompt);
  const int64_t window = model->config().max_position_embeddings;
  at::NoGradGuard no_grad;
  for (int64_t i = 0; i < new_tokens; ++i) {
    const int64_t start = std::max<int64_t>(0, static_cast<int64_t>(ids.size()) - window);
    auto input = at::tensor(std::vector<int64_t>(ids.begin() + start, ids.end()), at::kLong).unsqueeze(0);
    auto logits = model->forward(input)[0][-1].to(at::kFloat);
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
  std::cout << data::decode_bytes(ids) << "\n";
  return 0;
}

}  // namespace meshtrain::tools

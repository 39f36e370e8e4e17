// meshtrain eval: the token-weighted loss of a checkpoint over a file's consecutive windows (text
// through the model's tokenizer), on one rank or on any mesh (data-parallel ranks take turns).
#include <cstdio>
#include <iostream>

#include "models/hf_weights.h"
#include "tools/commands.h"
#include "tools/flags.h"
#include "tools/parallel_flags.h"
#include "tools/text_data.h"
#include "train/evaluation.h"
#include "util/check.h"

namespace meshtrain::tools {

int run_eval(const Args& argv) {
  std::vector<FlagSpec> specs = {{"model_name_or_path", "HF checkpoint directory (required)"},
                                 {"data", "token file: .npy .bin, or text: .txt .jsonl (required)"},
                                 {"tokenizer_name", "HF tokenizer directory for text data (default: the model's)"},
                                 {"seq_len", "tokens per window (default 256)"},
                                 {"batch_size", "windows per forward pass and rank (default 8)"}};
  for (auto& spec : parallel_flag_specs()) specs.push_back(spec);
  Flags flags("eval", specs, argv);
  if (flags.help_requested()) {
    std::cout << flags.usage("--model_name_or_path DIR --data PATH [--seq_len S]");
    return 0;
  }
  auto model_path = flags.require("model_name_or_path");
  auto data_path = resolve_path(flags.require("data"));
  const int64_t seq_len = flags.get_int("seq_len", 256);
  const int64_t batch = flags.get_int("batch_size", 8);
  if (batch < 1) throw UsageError("meshtrain eval: --batch_size must be positive");
  const auto options = parallel_options_from(flags);
  auto runtime = start_runtime_from(flags);
  auto parallel_model = parallel::load_pretrained_parallel(model_path, runtime.mesh, options);
  if (runtime.env.rank == 0) report_tp_plan(*parallel_model);
  auto& model = *parallel_model;
  model.check_sequence_length(seq_len);
  auto dataset = open_data(data_path, tokenizer_from(flags), runtime, model.model().config().vocab_size);
  dataset->check_ids(model.model().config().vocab_size);
  const auto result = train::evaluate(model, *dataset, seq_len, batch);
  if (runtime.env.rank == 0)
    std::printf("eval_loss: %.6f\neval_tokens: %lld\n", result.loss, static_cast<long long>(result.tokens));
  return 0;
}

}  // namespace meshtrain::tools

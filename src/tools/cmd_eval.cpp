// meshtrain eval: the token-weighted loss of a checkpoint over a file's consecutive windows, on
// one rank or on any mesh (data-parallel ranks take turns over the batches).
#include <cstdio>
#include <iostream>

#include "data/eval_windows.h"
#include "dist/device_mesh.h"
#include "models/hf_weights.h"
#include "nn/causal_lm_loss.h"
#include "parallel/step_loss.h"
#include "tools/commands.h"
#include "tools/flags.h"
#include "tools/parallel_flags.h"
#include "util/check.h"

namespace meshtrain::tools {

int run_eval(const Args& argv) {
  std::vector<FlagSpec> specs = {{"model_name_or_path", "HF checkpoint directory (required)"},
                                 {"data", "token file: .npy .bin .txt .jsonl (required)"},
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
  auto dataset = data::open_token_dataset(data_path);
  auto parallel_model = parallel::load_pretrained_parallel(model_path, runtime.mesh, options);
  if (runtime.env.rank == 0) report_tp_plan(*parallel_model);
  auto& model = *parallel_model;
  model.check_sequence_length(seq_len);
  dataset->check_ids(model.model().config().vocab_size);
  const int64_t windows = data::num_consecutive_windows(*dataset, seq_len);

  // Every rank runs the same number of forwards (sharded layers communicate inside them); a
  // data-parallel rank past the last batch runs one whose targets are all ignored.
  auto& dp = runtime.mesh->group(MeshDim::Dp);
  const int64_t batches = (windows + batch - 1) / batch;
  const int64_t rounds = (batches + dp.size() - 1) / dp.size();
  std::vector<parallel::MicroBatch> mine;
  for (int64_t round = 0; round < rounds; ++round) {
    const int64_t b = round * dp.size() + dp.rank();
    const bool real = b < batches;
    const int64_t first = real ? b * batch : 0;
    auto ids = data::consecutive_windows(*dataset, seq_len, first, std::min(batch, windows - first));
    mine.push_back({ids, real ? nn::shift_labels(ids) : at::full_like(ids, nn::kIgnoreIndex)});
  }
  at::NoGradGuard no_grad;
  const auto loss = parallel::step_loss(model, mine, parallel::Pass::Forward);
  if (runtime.env.rank == 0)
    std::printf("eval_loss: %.6f\neval_tokens: %lld\n", loss.mean(), static_cast<long long>(loss.targets));
  return 0;
}

}  // namespace meshtrain::tools

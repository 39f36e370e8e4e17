// meshtrain eval: the token-weighted loss of a checkpoint over a file's consecutive windows.
#include <cstdio>
#include <iostream>

#include "data/eval_windows.h"
#include "models/hf_weights.h"
#include "nn/causal_lm_loss.h"
#include "tools/commands.h"
#include "tools/flags.h"
#include "util/check.h"

namespace meshtrain::tools {

int run_eval(const Args& argv) {
  Flags flags("eval", {{"model_name_or_path", "HF checkpoint directory (required)"},
                       {"data", "token file: .npy .bin .txt .jsonl (required)"},
                       {"seq_len", "tokens per window (default 256)"},
                       {"batch_size", "windows per forward pass (default 8)"}},
              argv);
  if (flags.help_requested()) {
    std::cout << flags.usage("--model_name_or_path DIR --data PATH [--seq_len S]");
    return 0;
  }
  auto model = models::load_pretrained(flags.require("model_name_or_path"));
  auto dataset = data::open_token_dataset(resolve_path(flags.require("data")));
  const int64_t seq_len = flags.get_int("seq_len", 256);
  const int64_t batch = flags.get_int("batch_size", 8);
  if (batch < 1) throw UsageError("meshtrain eval: --batch_size must be positive");
  const int64_t windows = data::num_consecutive_windows(*dataset, seq_len);

  at::NoGradGuard no_grad;
  double loss_sum = 0.0;
  int64_t targets_total = 0;
  for (int64_t first = 0; first < windows; first += batch) {
    auto ids = data::consecutive_windows(*dataset, seq_len, first, std::min(batch, windows - first));
    auto targets = nn::shift_labels(ids);
    loss_sum += nn::cross_entropy_sum(model->forward(ids), targets).item<double>();
    targets_total += nn::count_targets(targets);
  }
  std::printf("eval_loss: %.6f\neval_tokens: %lld\n", loss_sum / static_cast<double>(targets_total),
              static_cast<long long>(targets_total));
  return 0;
}

}  // namespace meshtrain::tools

// meshtrain verify's runs: one training command run to completion with its output in a log file,
// its metrics.jsonl read back, and each run compared step by step with the reference run.
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace meshtrain::tools {

struct RunRecord {
  std::string error;  // empty when the run exited 0 and logged its steps
  std::vector<double> losses, grad_norms;  // per step
  double tokens_per_s = 0.0;  // median over the steps after the first (warm-up), or the only one
  std::optional<double> peak_memory_mib;  // the largest logged, when metrics carry it
  double seconds = 0.0;  // wall time of the whole command
};

// Runs argv (argv[0] the program) with stdout and stderr into `log`, stdin from /dev/null, and
// without the rank variables of any launcher around us (RANK, WORLD_SIZE, ...), so a child is a
// fresh job. Returns the record of `metrics_dir`/metrics.jsonl, which must hold `steps` steps; on
// failure `error` holds the log's error line.
RunRecord run_logged(const std::vector<std::string>& argv, const std::filesystem::path& log,
                     const std::filesystem::path& metrics_dir, int64_t steps);

// The largest |x / reference - 1| over the steps (infinity for a non-finite value).
double max_relative_difference(const std::vector<double>& x, const std::vector<double>& reference);

// The line a failed command's log names its error in: the last one with "error", else the last
// non-empty one.
std::string error_line(const std::string& log_text);

}  // namespace meshtrain::tools

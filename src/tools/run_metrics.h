// One run's metrics.jsonl as series over the logged steps, for `meshtrain plot`: every numeric
// key a column (NaN where a row lacks it), rows ordered by step, the last row of a step winning.
#pragma once
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace meshtrain::tools {

struct RunMetrics {
  std::filesystem::path file;
  std::vector<double> step;                      // ascending, distinct
  std::map<std::string, std::vector<double>> series;  // key -> one value per step (NaN: absent or null)
  // tokens_per_expert per step: [layer][expert] counts; empty for a step that lacks it.
  std::vector<std::vector<std::vector<double>>> tokens_per_expert;

  // Whether the key has a finite value at any step.
  bool has(const std::string& key) const;
  const std::vector<double>& values(const std::string& key) const;  // all NaN when absent
  bool has_moe_routing() const;
};

// Reads run_dir/metrics.jsonl. A missing file, a line that is not a JSON object, a row without a
// numeric step or with a value of the wrong kind is an Error naming the file and line.
RunMetrics read_run_metrics(const std::filesystem::path& run_dir);

// The legend's names: each run's directory name, with parent folders prefixed as far as needed to
// tell equal names apart ("a/run", "b/run").
std::vector<std::string> run_labels(const std::vector<std::filesystem::path>& run_dirs);

}  // namespace meshtrain::tools

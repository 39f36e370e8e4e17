#include "tools/run_metrics.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <set>

#include "util/check.h"

namespace meshtrain::tools {
namespace fs = std::filesystem;
namespace {

struct Row {
  double step;
  std::map<std::string, double> values;
  std::vector<std::vector<double>> tokens_per_expert;
};

// [layer][expert] token counts, all layers with the same number of experts.
std::vector<std::vector<double>> routing_counts(const nlohmann::json& v, const std::string& where) {
  const std::string bad = where + ": tokens_per_expert must be a list (per MoE layer) of lists of counts";
  if (!v.is_array() || v.empty()) fail(bad);
  std::vector<std::vector<double>> out;
  for (const auto& layer : v) {
    if (!layer.is_array() || layer.empty()) fail(bad);
    auto& counts = out.emplace_back();
    for (const auto& c : layer) {
      if (!c.is_number() || c.get<double>() < 0) fail(bad, ", got ", c.dump());
      counts.push_back(c.get<double>());
    }
    if (counts.size() != out.front().size())
      fail(where, ": tokens_per_expert has ", out.front().size(), " experts in layer 0 but ", counts.size(),
           " in layer ", out.size() - 1);
  }
  return out;
}

Row parse_row(const std::string& line, const std::string& where) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const nlohmann::json::parse_error& e) {
    fail(where, ": not valid JSON (", e.what(), ")");
  }
  if (!j.is_object()) fail(where, ": expected a JSON object, got ", j.type_name());
  if (!j.contains("step") || !j["step"].is_number()) fail(where, ": no numeric \"step\"");
  Row row{j["step"].get<double>(), {}, {}};
  if (!std::isfinite(row.step)) fail(where, ": \"step\" is not finite");
  for (const auto& [key, v] : j.items()) {
    if (key == "step") continue;
    if (key == "tokens_per_expert") {
      if (!v.is_null()) row.tokens_per_expert = routing_counts(v, where);
    } else if (v.is_number()) {
      row.values[key] = v.get<double>();
    } else if (v.is_null()) {
      row.values[key] = NAN;  // a value the run could not measure: a gap in its line
    } else if (v.is_string() || v.is_boolean()) {
      fail(where, ": \"", key, "\" should be a number, got ", v.dump());
    }
    // Objects and lists other than tokens_per_expert (bytes_sent_per_step, ...) are not plotted.
  }
  return row;
}

}  // namespace

bool RunMetrics::has(const std::string& key) const {
  auto it = series.find(key);
  if (it == series.end()) return false;
  for (double v : it->second)
    if (std::isfinite(v)) return true;
  return false;
}

const std::vector<double>& RunMetrics::values(const std::string& key) const {
  static const std::vector<double> none;
  auto it = series.find(key);
  return it == series.end() ? none : it->second;
}

bool RunMetrics::has_moe_routing() const {
  for (const auto& t : tokens_per_expert)
    if (!t.empty()) return true;
  return false;
}

RunMetrics read_run_metrics(const fs::path& run_dir) {
  RunMetrics m;
  m.file = run_dir / "metrics.jsonl";
  if (!fs::is_directory(run_dir)) fail(run_dir.string(), ": no such run directory");
  std::ifstream in(m.file);
  if (!in) fail(m.file.string(), ": cannot be read (is ", run_dir.string(), " a meshtrain output_dir?)");
  // By step, the last row winning: a run restarted from a checkpoint logs its steps again.
  std::map<double, Row> rows;
  int number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    Row row = parse_row(line, str_cat(m.file.string(), ":", number));
    rows.insert_or_assign(row.step, std::move(row));
  }
  if (rows.empty()) fail(m.file.string(), ": no logged steps");
  std::set<std::string> keys;
  for (const auto& [step, row] : rows)
    for (const auto& [key, v] : row.values) keys.insert(key);
  for (const auto& key : keys) m.series[key].reserve(rows.size());
  std::pair<size_t, size_t> shape{0, 0};  // layers, experts: one heatmap needs them fixed
  for (auto& [step, row] : rows) {
    m.step.push_back(step);
    for (const auto& key : keys) {
      auto it = row.values.find(key);
      m.series[key].push_back(it == row.values.end() ? NAN : it->second);
    }
    auto& routing = row.tokens_per_expert;
    if (!routing.empty()) {
      const std::pair<size_t, size_t> here{routing.size(), routing[0].size()};
      if (shape.first != 0 && here != shape)
        fail(m.file.string(), ": tokens_per_expert changes shape at step ", step, " (", here.first, " layers x ",
             here.second, " experts, before ", shape.first, " x ", shape.second, ")");
      shape = here;
    }
    m.tokens_per_expert.push_back(std::move(routing));
  }
  return m;
}

std::vector<std::string> run_labels(const std::vector<fs::path>& run_dirs) {
  // Each run's path components, last first, from its absolute form ("." names the folder).
  std::vector<std::vector<std::string>> parts;
  for (const auto& dir : run_dirs) {
    auto& p = parts.emplace_back();
    const fs::path full = fs::absolute(dir).lexically_normal();
    for (const auto& c : full)
      if (!c.empty() && c != "/") p.insert(p.begin(), c.string());
    if (p.empty()) p.push_back("/");
  }
  std::vector<size_t> depth(run_dirs.size(), 1);
  auto label = [&](size_t i) {
    std::string s;
    for (size_t d = std::min(depth[i], parts[i].size()); d-- > 0;) s += parts[i][d] + (d ? "/" : "");
    return s;
  };
  // Lengthen every label that collides until none does or the paths run out.
  for (bool changed = true; changed;) {
    std::vector<size_t> grow;
    for (size_t i = 0; i < run_dirs.size(); ++i)
      for (size_t j = 0; j < run_dirs.size(); ++j)
        if (i != j && label(i) == label(j) && depth[i] < parts[i].size()) {
          grow.push_back(i);
          break;
        }
    for (size_t i : grow) ++depth[i];
    changed = !grow.empty();
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < run_dirs.size(); ++i) out.push_back(label(i));
  return out;
}

}  // namespace meshtrain::tools

#include "parallel/tp_plan.h"

#include <nlohmann/json.hpp>

#include <regex>

#include "util/check.h"
#include "util/files.h"

namespace meshtrain::parallel {

namespace {

const std::vector<std::pair<std::string, TpStyle>>& style_names() {
  static const std::vector<std::pair<std::string, TpStyle>> names = {
      {"colwise", TpStyle::Colwise},
      {"colwise_gather_output", TpStyle::ColwiseGatherOutput},
      {"colwise_rep", TpStyle::ColwiseGatherOutput},
      {"rowwise", TpStyle::Rowwise},
      {"rowwise_split_input", TpStyle::RowwiseSplitInput},
      {"rowwise_rep", TpStyle::RowwiseSplitInput},
      {"packed_colwise", TpStyle::PackedColwise},
      {"packed_rowwise", TpStyle::PackedRowwise},
      {"local_packed_rowwise", TpStyle::PackedRowwise},
      {"embedding_rowwise", TpStyle::EmbeddingRowwise},
      {"replicated_with_grad_allreduce", TpStyle::ReplicatedWithGradAllreduce},
      {"replicate", TpStyle::ReplicatedWithGradAllreduce},
      {"local_colwise", TpStyle::LocalColwise},
      {"local_rowwise", TpStyle::LocalRowwise},
      {"local", TpStyle::Local},
      {"all_reduce", TpStyle::AllReduce},
      {"sequence_parallel", TpStyle::SequenceParallel},
      {"gather", TpStyle::AllReduce},
      {"moe_tp_experts", TpStyle::MoeTpExperts},
  };
  return names;
}

std::string parent_of(const std::string& path) {
  auto dot = path.rfind('.');
  return dot == std::string::npos ? "" : path.substr(0, dot);
}

}  // namespace

TpStyle parse_tp_style(const std::string& name, const std::string& pattern) {
  for (auto& [n, s] : style_names())
    if (n == name) return s;
  std::string accepted;
  for (auto& [n, s] : style_names()) accepted += (accepted.empty() ? "" : ", ") + n;
  throw UsageError(str_cat("Unsupported tensor parallel style '", name, "' for layer '", pattern,
                           "'. Supported styles are [", accepted, "]"));
}

std::string tp_style_name(TpStyle style) {
  for (auto& [n, s] : style_names())
    if (s == style) return n;
  return "?";
}

std::string wildcard_layer_indices(const std::string& name) {
  static const std::regex index(R"(\.\d+(\.|$))");
  return std::regex_replace(name, index, ".*$1");
}

TpPlan::TpPlan(const std::map<std::string, std::string>& rules) {
  for (auto& [pattern, style] : rules) rules_[pattern] = parse_tp_style(style, pattern);
}

TpPlan TpPlan::llama_default() {
  return TpPlan({{"model.layers.*.self_attn.q_proj", "colwise"},
                 {"model.layers.*.self_attn.k_proj", "colwise"},
                 {"model.layers.*.self_attn.v_proj", "colwise"},
                 {"model.layers.*.self_attn.o_proj", "rowwise"},
                 {"model.layers.*.mlp.gate_proj", "colwise"},
                 {"model.layers.*.mlp.up_proj", "colwise"},
                 {"model.layers.*.mlp.down_proj", "rowwise"},
                 {"lm_head", "colwise_gather_output"}});
}

TpPlan TpPlan::hf_default(const std::string& model_type, bool shard_experts) {
  auto rules = llama_default().rules_;
  if (shard_experts && (model_type == "mixtral" || model_type == "qwen3_moe")) {
    rules["model.layers.*.mlp.experts.gate_up_proj"] = TpStyle::PackedColwise;
    rules["model.layers.*.mlp.experts.down_proj"] = TpStyle::Rowwise;
    rules["model.layers.*.mlp.experts"] = TpStyle::MoeTpExperts;
  }
  if (model_type == "mixtral")  // no dense MLP layers
    for (auto proj : {"gate_proj", "up_proj", "down_proj"}) rules.erase(std::string("model.layers.*.mlp.") + proj);
  TpPlan plan;
  plan.rules_ = rules;
  return plan;
}

TpPlan TpPlan::from_json_file(const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(util::read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw UsageError(str_cat("--tp_plan ", path, " is not valid JSON: ", e.what()));
  }
  if (!j.is_object()) throw UsageError(str_cat("--tp_plan ", path, ": expected an object of pattern -> style"));
  std::map<std::string, std::string> rules;
  for (auto& [pattern, style] : j.items()) {
    if (!style.is_string()) throw UsageError(str_cat("--tp_plan ", path, ": the style of '", pattern, "' is not a string"));
    rules[pattern] = style.get<std::string>();
  }
  return TpPlan(rules);
}

std::optional<TpStyle> TpPlan::style_of(const std::string& path) const {
  for (const auto& key : {path, parent_of(path), wildcard_layer_indices(path), wildcard_layer_indices(parent_of(path))}) {
    if (key.empty()) continue;
    if (auto it = rules_.find(key); it != rules_.end()) return it->second;
  }
  return std::nullopt;
}

std::vector<std::string> TpPlan::unused_rules(const std::vector<std::string>& paths) const {
  std::vector<std::string> unused;
  for (auto& [pattern, style] : rules_) {
    bool used = false;
    for (auto& p : paths)
      for (const auto& name : {p, p + ".weight", p + ".bias"})
        used |= name == pattern || wildcard_layer_indices(name) == pattern;
    if (!used) unused.push_back(pattern);
  }
  return unused;
}

}  // namespace meshtrain::parallel

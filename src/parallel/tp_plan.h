// Hugging Face tp_plans: style names (newest names, older ones as aliases) parsed once into
// TpStyle, and the lookup of a module's style by upstream's precedence: exact key, parent
// module, wildcard key, wildcard parent, where only layer indices (".N." or a trailing ".N")
// become wildcards.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace meshtrain::parallel {

enum class TpStyle {
  Colwise,
  ColwiseGatherOutput,
  Rowwise,
  RowwiseSplitInput,
  PackedColwise,  // a fused gate ‖ up projection: rank r holds [gate_r | up_r] of the outputs
  PackedRowwise,  //   and of the inputs
  EmbeddingRowwise,
  ReplicatedWithGradAllreduce,  // a norm on head- or sequence-sharded activations: gradients summed over tp
  LocalColwise,                 // colwise / rowwise whose f and g are their block's entry and exit
  LocalRowwise,
  Local,      // upstream's weight ÷ mesh size for a parent's sum: rejected, it does not train like serial
  AllReduce,  // on a block (or the experts): where its partial outputs are summed
  SequenceParallel,  // a replicated norm on sequence-sharded activations: gradients summed over tp
  MoeTpExperts,      // the experts module whose weights are sharded: tokens in by f, outputs summed
};

// Unknown names are an error that lists the accepted ones.
TpStyle parse_tp_style(const std::string& name, const std::string& pattern);
std::string tp_style_name(TpStyle style);

class TpPlan {
 public:
  TpPlan() = default;
  explicit TpPlan(const std::map<std::string, std::string>& rules);  // pattern -> style name
  static TpPlan llama_default();
  // Hugging Face's plan for the model type: Llama's, plus for mixtral / qwen3_moe the experts
  // (gate_up_proj packed_colwise, down_proj rowwise, experts moe_tp_experts) unless
  // shard_experts is false.
  static TpPlan hf_default(const std::string& model_type, bool shard_experts = true);
  static TpPlan from_json_file(const std::string& path);

  // The style of a parameter (dotted name, e.g. model.layers.0.mlp.up_proj.weight), if any
  // rule applies to it or to its module.
  std::optional<TpStyle> style_of(const std::string& param_name) const;
  // Rules that matched none of the given module paths (nor their weight / bias).
  std::vector<std::string> unused_rules(const std::vector<std::string>& module_paths) const;
  const std::map<std::string, TpStyle>& rules() const { return rules_; }

 private:
  std::map<std::string, TpStyle> rules_;
};

// "model.layers.12.mlp.up_proj" -> "model.layers.*.mlp.up_proj"
std::string wildcard_layer_indices(const std::string& name);

}  // namespace meshtrain::parallel

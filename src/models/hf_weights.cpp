#include "models/hf_weights.h"

#include <iostream>
#include <map>
#include <set>

#include "util/check.h"
#include "util/files.h"

namespace meshtrain::models {

namespace {

// Per-expert names: Mixtral keeps its v4 module block_sparse_moe with w1 (gate), w3 (up),
// w2 (down); Qwen3-MoE keeps mlp with gate_proj / up_proj / down_proj.
struct PerExpertNames {
  std::string block, gate, up, down;
};

PerExpertNames per_expert_names(const LlamaConfig& c) {
  if (c.model_type == "mixtral") return {"block_sparse_moe", "w1", "w3", "w2"};
  return {"mlp", "gate_proj", "up_proj", "down_proj"};
}

// Reads the part of a checkpoint tensor that overlaps this rank's block of a parameter.
// `region_start` is where the tensor (viewed with the parameter's rank) starts in the global
// parameter; returns the number of elements copied.
int64_t copy_overlap(at::Tensor& param, const std::vector<int64_t>& block_offset, at::Tensor value,
                     const std::vector<int64_t>& region_start) {
  auto dst = param;
  for (int64_t d = 0; d < param.dim(); ++d) {
    const int64_t lo = std::max(block_offset[d], region_start[d]);
    const int64_t hi = std::min(block_offset[d] + param.size(d), region_start[d] + value.size(d));
    if (hi <= lo) return 0;
    dst = dst.narrow(d, lo - block_offset[d], hi - lo);
    value = value.narrow(d, lo - region_start[d], hi - lo);
  }
  dst.copy_(value.to(param.scalar_type()));
  return dst.numel();
}

}  // namespace

at::Tensor HfTensor::slice_of(const at::Tensor& full) const {
  if (expert < 0) return full;
  return full.select(0, expert).narrow(0, row_start, rows);
}

std::vector<HfTensor> hf_tensors(const LlamaForCausalLM& model, ExpertLayout layout) {
  const auto& c = model.config();
  const auto names = per_expert_names(c);
  std::vector<HfTensor> out;
  for (auto& [name, p] : model.named_params()) {
    const auto shape = model.placement(name).global_shape;
    const bool expert_param = name.ends_with(".mlp.experts.gate_up_proj") || name.ends_with(".mlp.experts.down_proj");
    const bool router = c.moe && name.ends_with(".mlp.gate.weight");
    if (layout == ExpertLayout::Fused || !(expert_param || router)) {
      out.push_back({name, name, shape});
      continue;
    }
    const std::string layer = name.substr(0, name.find(".mlp."));  // model.layers.N
    const std::string block = layer + "." + names.block + ".";
    if (router) {
      out.push_back({block + "gate.weight", name, shape});
      continue;
    }
    const int64_t num_experts = shape[0];
    if (name.ends_with("gate_up_proj")) {  // [E, 2I, D]: gate rows, then up rows
      const int64_t inter = shape[1] / 2;
      for (int64_t e = 0; e < num_experts; ++e) {
        const std::string prefix = block + "experts." + std::to_string(e) + ".";
        out.push_back({prefix + names.gate + ".weight", name, {inter, shape[2]}, e, 0, inter});
        out.push_back({prefix + names.up + ".weight", name, {inter, shape[2]}, e, inter, inter});
      }
    } else {  // down_proj [E, D, I]
      for (int64_t e = 0; e < num_experts; ++e)
        out.push_back({block + "experts." + std::to_string(e) + "." + names.down + ".weight", name,
                       {shape[1], shape[2]}, e, 0, shape[1]});
    }
  }
  return out;
}

std::vector<HfTensor> hf_tensors(const LlamaForCausalLM& model) {
  const auto& moe = model.config().moe;
  return hf_tensors(model, moe ? moe->checkpoint_layout : ExpertLayout::Fused);
}

ExpertLayout detect_expert_layout(const LlamaConfig& config, const io::CheckpointReader& checkpoint) {
  for (int64_t i = 0; i < config.num_hidden_layers; ++i)
    if (config.is_moe_layer(i))
      return checkpoint.contains("model.layers." + std::to_string(i) + ".mlp.experts.gate_up_proj")
                 ? ExpertLayout::Fused
                 : ExpertLayout::PerExpert;
  return ExpertLayout::PerExpert;
}

void load_hf_weights(LlamaForCausalLM& model, const io::CheckpointReader& checkpoint) {
  at::NoGradGuard no_grad;
  std::set<std::string> unused;
  for (const auto& name : checkpoint.names()) unused.insert(name);
  if (model.config().tie_word_embeddings) unused.erase("lm_head.weight");
  // The per-expert tensors of each parameter, for checkpoints without the fused names.
  std::map<std::string, std::vector<HfTensor>> pieces;
  if (model.config().moe)
    for (auto& t : hf_tensors(model, ExpertLayout::PerExpert))
      if (t.name != t.param) pieces[t.param].push_back(t);
  std::vector<std::string> missing;
  for (auto& [name, param] : model.named_params()) {
    const auto& place = model.placement(name);
    if (!checkpoint.contains(name) && pieces.count(name)) {
      int64_t copied = 0;
      for (auto& t : pieces.at(name)) {
        if (!checkpoint.contains(t.name)) {
          missing.push_back(t.name);
          continue;
        }
        unused.erase(t.name);
        const auto& stored = checkpoint.info(t.name).shape;
        MT_CHECK(stored == t.shape, "checkpoint tensor ", t.name, " has shape ", at::IntArrayRef(stored),
                 " but the config gives ", at::IntArrayRef(t.shape));
        auto value = checkpoint.read(t.name);
        std::vector<int64_t> start(param.dim(), 0);
        if (t.expert >= 0) {
          value = value.unsqueeze(0);
          start[0] = t.expert;
          start[1] = t.row_start;
        }
        for (auto& box : place.boxes(param)) copied += copy_overlap(box.local, box.offset, value, start);
      }
      MT_CHECK(copied == param.numel() || !missing.empty(), "the per-expert tensors of ", name, " cover ", copied,
               " of the ", param.numel(), " elements this rank holds");
      continue;
    }
    if (!checkpoint.contains(name)) {
      missing.push_back(name);
      continue;
    }
    unused.erase(name);
    const auto& stored = checkpoint.info(name).shape;
    MT_CHECK(stored == place.global_shape, "checkpoint tensor ", name, " has shape ",
             at::IntArrayRef(stored), " but the config gives ", at::IntArrayRef(place.global_shape));
    // Only this rank's boxes are read: each a slice along its first split dim, narrowed on the others.
    for (auto& box : place.boxes(param)) {
      at::Tensor value;
      for (int64_t d = 0; d < param.dim(); ++d) {
        if (box.local.size(d) == place.global_shape[d]) continue;
        value = value.defined() ? value.narrow(d, box.offset[d], box.local.size(d))
                                : checkpoint.read_slice(name, d, box.offset[d], box.local.size(d));
      }
      if (!value.defined()) value = checkpoint.read(name);
      box.local.copy_(value.to(param.scalar_type()));
    }
  }
  if (!missing.empty()) {
    std::string list;
    for (auto& m : missing) list += (list.empty() ? "" : ", ") + m;
    fail("checkpoint is missing ", missing.size(), " tensor(s): ", list);
  }
  for (const auto& name : unused)  // a slice (pipeline stage) leaves the other stages' tensors
    if (!name.ends_with("rotary_emb.inv_freq") && !model.is_slice())
      std::cerr << "warning: checkpoint tensor " << name << " is not used by the model\n";
}

void save_hf_checkpoint(const LlamaForCausalLM& model, const std::filesystem::path& dir,
                        uint64_t max_shard_bytes) {
  std::filesystem::create_directories(dir);
  std::map<std::string, at::Tensor> params;
  for (auto& [name, param] : model.named_params()) {
    MT_CHECK(model.placement(name).is_whole(), "save_hf_checkpoint: ", name,
             " is sharded; gather it before saving");
    params[name] = param.detach();
  }
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  const auto dtype = model.config().storage_dtype();  // the dtype the checkpoint came in
  for (auto& t : hf_tensors(model)) tensors.emplace_back(t.name, t.slice_of(params.at(t.param)).to(dtype));
  io::save_checkpoint_tensors(dir, tensors, max_shard_bytes);
  util::write_file_atomic(dir / "config.json", model.config().to_json().dump(2) + "\n");
}

std::shared_ptr<LlamaForCausalLM> load_pretrained(
    const std::filesystem::path& dir, const std::function<void(std::shared_ptr<LlamaForCausalLM>)>& prepare) {
  auto config = LlamaConfig::load(dir);
  io::CheckpointReader checkpoint(dir);
  if (config.moe) config.moe->checkpoint_layout = detect_expert_layout(config, checkpoint);
  auto model = std::make_shared<LlamaForCausalLM>(config);
  if (prepare) prepare(model);
  load_hf_weights(*model, checkpoint);
  return model;
}

}  // namespace meshtrain::models

#include "models/hf_weights.h"

#include <iostream>
#include <set>

#include "util/check.h"
#include "util/files.h"

namespace meshtrain::models {

void load_hf_weights(LlamaForCausalLM& model, const io::CheckpointReader& checkpoint) {
  at::NoGradGuard no_grad;
  std::set<std::string> unused;
  for (const auto& name : checkpoint.names()) unused.insert(name);
  if (model.config().tie_word_embeddings) unused.erase("lm_head.weight");
  std::vector<std::string> missing;
  for (auto& [name, param] : model.named_params()) {
    if (!checkpoint.contains(name)) {
      missing.push_back(name);
      continue;
    }
    unused.erase(name);
    const auto& place = model.placement(name);
    const auto& stored = checkpoint.info(name).shape;
    MT_CHECK(stored == place.global_shape, "checkpoint tensor ", name, " has shape ",
             at::IntArrayRef(stored), " but the config gives ", at::IntArrayRef(place.global_shape));
    // Only this rank's block is read: a slice along the first split dim, narrowed on the others.
    at::Tensor value;
    for (size_t d = 0; d < place.offset.size(); ++d) {
      const auto dim = static_cast<int64_t>(d);
      if (param.size(dim) == place.global_shape[d]) continue;
      value = value.defined() ? value.narrow(dim, place.offset[d], param.size(dim))
                              : checkpoint.read_slice(name, dim, place.offset[d], param.size(dim));
    }
    if (!value.defined()) value = checkpoint.read(name);
    param.copy_(value.to(param.scalar_type()));
  }
  if (!missing.empty()) {
    std::string list;
    for (auto& m : missing) list += (list.empty() ? "" : ", ") + m;
    fail("checkpoint is missing ", missing.size(), " tensor(s): ", list);
  }
  for (const auto& name : unused)
    if (!name.ends_with("rotary_emb.inv_freq"))
      std::cerr << "warning: checkpoint tensor " << name << " is not used by the model\n";
}

void save_hf_checkpoint(const LlamaForCausalLM& model, const std::filesystem::path& dir,
                        uint64_t max_shard_bytes) {
  std::filesystem::create_directories(dir);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (auto& [name, param] : model.named_params()) {
    MT_CHECK(model.placement(name).is_whole(), "save_hf_checkpoint: ", name,
             " is sharded; gather it before saving");
    tensors.emplace_back(name, param.detach());
  }
  io::save_checkpoint_tensors(dir, tensors, max_shard_bytes);
  util::write_file_atomic(dir / "config.json", model.config().to_json().dump(2) + "\n");
}

std::shared_ptr<LlamaForCausalLM> load_pretrained(const std::filesystem::path& dir) {
  auto model = std::make_shared<LlamaForCausalLM>(LlamaConfig::load(dir));
  load_hf_weights(*model, io::CheckpointReader(dir));
  return model;
}

}  // namespace meshtrain::models

#include "models/llama.h"

#include "util/check.h"

namespace meshtrain::models {

namespace {

// FNV-1a: a hash of the parameter name that is the same on every platform and build.
uint64_t stable_hash(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

}  // namespace

LlamaDecoderLayer::LlamaDecoderLayer(const LlamaConfig& c, int64_t layer_index) {
  self_attn = register_module("self_attn", std::make_shared<nn::Attention>(nn::AttentionShape{
      c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.attention_bias, c.qk_norm,
      c.rms_norm_eps}));
  if (c.is_moe_layer(layer_index)) {
    const auto& m = *c.moe;
    moe = register_module("mlp", std::make_shared<nn::SparseMoe>(nn::MoeShape{
        c.hidden_size, m.num_experts, m.num_experts_per_tok, m.intermediate_size, m.norm_topk_prob, m.capacity_factor}));
  } else {
    mlp = register_module("mlp", std::make_shared<nn::Mlp>(c.hidden_size, c.intermediate_size, c.mlp_bias));
  }
  input_layernorm = register_module("input_layernorm", std::make_shared<nn::RMSNorm>(c.hidden_size, c.rms_norm_eps));
  post_attention_layernorm = register_module(
      "post_attention_layernorm", std::make_shared<nn::RMSNorm>(c.hidden_size, c.rms_norm_eps));
}

nn::LayerOutput LlamaDecoderLayer::forward(const at::Tensor& hidden, const nn::RopeTables& rope,
                                           const at::Tensor& document_ids) {
  auto h = hidden + self_attn->forward(input_layernorm->forward(hidden), rope, document_ids);
  auto normed = post_attention_layernorm->forward(h);
  if (!moe) return {h + mlp->forward(normed), std::nullopt};
  auto out = moe->forward(normed);
  return {h + out.hidden, std::move(out.router)};
}

LlamaModel::LlamaModel(const LlamaConfig& c) : rotary_(c.head_dim, c.rope_theta, c.rope_scaling) {
  embed_tokens = register_module("embed_tokens", std::make_shared<nn::Embedding>(c.vocab_size, c.hidden_size));
  auto list = torch::nn::ModuleList();
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layers.push_back(std::make_shared<LlamaDecoderLayer>(c, i));
    list->push_back(layers.back());
  }
  register_module("layers", list);
  norm = register_module("norm", std::make_shared<nn::RMSNorm>(c.hidden_size, c.rms_norm_eps));
}

at::Tensor LlamaModel::forward(const at::Tensor& input_ids, const at::Tensor& position_ids, Routing* routing,
                              const at::Tensor& document_ids) {
  return norm->forward(forward_layers(embed_tokens->forward(input_ids), position_ids, routing, document_ids));
}

at::Tensor LlamaModel::forward_layers(at::Tensor hidden, const at::Tensor& position_ids, Routing* routing,
                                      const at::Tensor& document_ids, int64_t begin, int64_t end) {
  auto rope = rotary_.tables(position_ids, hidden.scalar_type());
  if (end < 0) end = static_cast<int64_t>(layers.size());
  for (auto i = static_cast<size_t>(begin); i < static_cast<size_t>(end); ++i) {
    if (!layers[i]) continue;
    // By value: a runner may run the layer again in backward (activation checkpointing).
    auto out = runners.run(static_cast<int64_t>(i), [layer = layers[i], rope, document_ids](const at::Tensor& x) {
      return layer->forward(x, rope, document_ids);
    }, hidden);
    hidden = out.hidden;
    if (out.router && routing) routing->push_back(std::move(*out.router));
  }
  return hidden;
}

LlamaForCausalLM::LlamaForCausalLM(const LlamaConfig& c) : config_(c) {
  model = register_module("model", std::make_shared<LlamaModel>(c));
  if (!c.tie_word_embeddings)
    lm_head = register_module("lm_head", std::make_shared<nn::Linear>(c.hidden_size, c.vocab_size, false));
  for (auto& [name, p] : named_params()) placements_[name] = nn::ParamPlacement::whole(p.sizes().vec());
}

at::Tensor LlamaForCausalLM::forward(const at::Tensor& input_ids, const at::Tensor& position_ids, Routing* routing,
                                     const at::Tensor& document_ids) {
  MT_CHECK(input_ids.dim() == 2, "input_ids must be [B, T], got ", input_ids.sizes());
  auto positions = position_ids.defined()
                       ? position_ids
                       : at::arange(input_ids.size(1), input_ids.options()).unsqueeze(0).expand_as(input_ids);
  auto hidden = model->forward(input_ids, positions, routing, document_ids);
  if (lm_head) return lm_head->forward(hidden);
  return tied_head_style->linear(hidden, model->embed_tokens->weight, {});
}

void LlamaForCausalLM::keep_slice(const std::vector<std::pair<int64_t, int64_t>>& ranges, bool embedding, bool head) {
  auto& m = *model;
  std::vector<bool> held(m.layers.size());
  for (auto [begin, end] : ranges) {
    MT_CHECK(0 <= begin && begin <= end && end <= static_cast<int64_t>(m.layers.size()), "layers [", begin, ", ",
             end, ") are not a slice of ", m.layers.size(), " layers");
    for (auto i = begin; i < end; ++i) held[static_cast<size_t>(i)] = true;
  }
  at::NoGradGuard no_grad;
  auto drop = [](torch::nn::Module& module) {  // the module may stay referenced: free its weights
    for (auto& p : module.parameters()) p.set_data(at::empty({0}, p.options()));
  };
  auto list = m.named_children()["layers"];
  for (int64_t i = 0; i < static_cast<int64_t>(m.layers.size()); ++i) {
    if (held[static_cast<size_t>(i)] || !m.layers[i]) continue;
    drop(*m.layers[i]);
    list->unregister_module(std::to_string(i));
    m.layers[i] = nullptr;
  }
  const bool tied_head = head && !lm_head;
  if (!embedding && !tied_head && m.embed_tokens) {
    drop(*m.embed_tokens);
    m.unregister_module("embed_tokens");
    m.embed_tokens = nullptr;
  }
  if (!head) {
    if (m.norm) {
      drop(*m.norm);
      m.unregister_module("norm");
      m.norm = nullptr;
    }
    if (lm_head) {
      drop(*lm_head);
      unregister_module("lm_head");
      lm_head = nullptr;
    }
  }
  std::map<std::string, nn::ParamPlacement> kept;
  for (auto& [name, p] : named_params()) kept[name] = placements_.at(name);
  placements_ = std::move(kept);
  holds_embedding_ = embedding;
  holds_head_ = head;
  is_slice_ = true;
}

at::Tensor LlamaForCausalLM::forward_slice(int64_t begin, int64_t end, const at::Tensor& input,
                                           const at::Tensor& position_ids, Routing* routing,
                                           const at::Tensor& document_ids) {
  const auto layers = static_cast<int64_t>(model->layers.size());
  MT_CHECK(0 <= begin && begin < end && end <= layers, "layers [", begin, ", ", end, ") of ", layers);
  for (auto i = begin; i < end; ++i) MT_CHECK(model->layers[static_cast<size_t>(i)], "layer ", i, " is not held here");
  const bool embedding = begin == 0, head = end == layers;
  MT_CHECK((!embedding || holds_embedding_) && (!head || holds_head_), "layers [", begin, ", ", end,
           ") need the embedding or the head, which another stage holds");
  auto hidden = embedding ? model->embed_tokens->forward(input) : input;
  hidden = model->forward_layers(hidden, position_ids, routing, document_ids, begin, end);
  if (!head) return hidden;
  hidden = model->norm->forward(hidden);
  if (lm_head) return lm_head->forward(hidden);
  return tied_head_style->linear(hidden, model->embed_tokens->weight, {});
}

std::vector<std::pair<std::string, at::Tensor>> LlamaForCausalLM::named_params() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : named_parameters(/*recurse=*/true)) out.emplace_back(item.key(), item.value());
  return out;
}

std::vector<std::pair<std::string, at::Tensor*>> LlamaForCausalLM::parameter_slots() {
  std::vector<std::pair<std::string, at::Tensor*>> slots;
  auto add = [&](const std::string& name, at::Tensor& t) {
    if (t.defined()) slots.emplace_back(name, &t);
  };
  auto add_linear = [&](const std::string& prefix, nn::Linear& l) {
    add(prefix + ".weight", l.weight);
    add(prefix + ".bias", l.bias);
  };
  if (model->embed_tokens) add("model.embed_tokens.weight", model->embed_tokens->weight);
  for (size_t i = 0; i < model->layers.size(); ++i) {
    if (!model->layers[i]) continue;
    auto& layer = *model->layers[i];
    const std::string p = "model.layers." + std::to_string(i) + ".";
    add_linear(p + "self_attn.q_proj", *layer.self_attn->q_proj);
    add_linear(p + "self_attn.k_proj", *layer.self_attn->k_proj);
    add_linear(p + "self_attn.v_proj", *layer.self_attn->v_proj);
    add_linear(p + "self_attn.o_proj", *layer.self_attn->o_proj);
    if (layer.self_attn->q_norm) {
      add(p + "self_attn.q_norm.weight", layer.self_attn->q_norm->weight);
      add(p + "self_attn.k_norm.weight", layer.self_attn->k_norm->weight);
    }
    if (layer.moe) {
      add_linear(p + "mlp.gate", *layer.moe->gate);
      add(p + "mlp.experts.gate_up_proj", layer.moe->experts->gate_up_proj);
      add(p + "mlp.experts.down_proj", layer.moe->experts->down_proj);
    } else {
      add_linear(p + "mlp.gate_proj", *layer.mlp->gate_proj);
      add_linear(p + "mlp.up_proj", *layer.mlp->up_proj);
      add_linear(p + "mlp.down_proj", *layer.mlp->down_proj);
    }
    add(p + "input_layernorm.weight", layer.input_layernorm->weight);
    add(p + "post_attention_layernorm.weight", layer.post_attention_layernorm->weight);
  }
  if (model->norm) add("model.norm.weight", model->norm->weight);
  if (lm_head) add("lm_head.weight", lm_head->weight);
  return slots;
}

void LlamaForCausalLM::set_dtype(const std::string& dtype) {
  LlamaConfig checked = config_;
  checked.dtype = dtype;
  checked.storage_dtype();  // an error naming the supported ones
  config_.dtype = dtype;
}

std::vector<std::shared_ptr<nn::SparseMoe>> LlamaForCausalLM::moe_layers() const {
  std::vector<std::shared_ptr<nn::SparseMoe>> out;
  for (auto& layer : model->layers)
    if (layer && layer->moe) out.push_back(layer->moe);
  return out;
}

nn::RouterLoad LlamaForCausalLM::router_load(const Routing& routing) const {
  if (routing.empty()) return {};
  std::vector<at::Tensor> logits;
  for (auto& record : routing) logits.push_back(record.router_logits);
  return nn::router_load(logits, config_.moe->num_experts, config_.moe->num_experts_per_tok);
}

at::Tensor LlamaForCausalLM::router_aux_loss(const Routing& routing) const {
  auto load = router_load(routing);
  if (!load.prob_sum.defined()) return {};
  return nn::balance_loss(load.assignments, load.prob_sum, static_cast<double>(load.rows));
}

void LlamaForCausalLM::init_weights(uint64_t seed) {
  at::NoGradGuard no_grad;
  for (auto& [name, p] : named_params()) {
    const auto& place = placements_.at(name);
    const bool is_norm = name.find("norm.weight") != std::string::npos;
    const bool is_bias = name.ends_with(".bias");
    if (is_norm || is_bias) {
      p.fill_(is_norm ? 1.0 : 0.0);
      continue;
    }
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed ^ stable_hash(name));
    auto full = at::normal(0.0, config_.initializer_range, place.global_shape, gen);
    if (name == "model.embed_tokens.weight" && config_.pad_token_id)
      full[*config_.pad_token_id].zero_();
    p.copy_(place.local_of(full, p.sizes()));
  }
}

}  // namespace meshtrain::models

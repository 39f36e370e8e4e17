#include "parallel/tensor_parallel.h"

#include <algorithm>
#include <functional>
#include <numeric>
#include <optional>

#include "dist/collectives.h"
#include "nn/moe.h"
#include "parallel/tp_styles.h"
#include "util/check.h"

namespace meshtrain::parallel {

namespace {

using dist::Group;
using namespace tp_styles;

struct Sharding {
  std::vector<int64_t> sizes;
  int64_t offset;
};

Sharding chunk(int64_t n, const Group& g) {
  auto sizes = dist::chunk_sizes(n, g.size());
  return {sizes, std::accumulate(sizes.begin(), sizes.begin() + g.rank(), int64_t{0})};
}

// Packed styles split each of the 2 blocks (gate ‖ up) evenly over tp, as upstream demands.
Sharding packed_chunk(int64_t n, const Group& g, const std::string& name) {
  MT_CHECK(n % 2 == 0, "Prepacked is not divisible by 2: ", name, " has ", n, " rows on its packed dim");
  MT_CHECK(n / 2 % g.size() == 0, name, ": a packed shard splits each of the 2 blocks of ", n / 2,
           " rows evenly, and tp_size ", g.size(), " does not divide ", n / 2);
  const int64_t length = n / 2 / g.size();
  return {std::vector<int64_t>(static_cast<size_t>(g.size()), length), g.rank() * length};
}

// A block of the decoder layer: its input projections and its output projection, by HF name.
struct Block {
  std::string path;
  std::vector<std::pair<std::string, nn::Linear*>> inputs;
  std::pair<std::string, nn::Linear*> output;
};

// Shards a model by a plan, module by module of the typed tree: the plan only says each
// module's style (HF's names and precedence).
class Sharder {
 public:
  Sharder(models::LlamaForCausalLM& model, Group& g, const TpPlan& plan, const TpOptions& options)
      : model_(model), g_(g), plan_(plan), options_(options) {}

  TpReport run(Group& experts_tp) {
    auto& m = *model_.model;
    // A pipeline stage holds a slice: the modules it lacks are skipped.
    if (m.embed_tokens) embedding("model.embed_tokens", *m.embed_tokens);
    for (size_t i = 0; i < m.layers.size(); ++i) {
      if (!m.layers[i]) continue;
      const std::string layer = "model.layers." + std::to_string(i);
      auto& decoder = *m.layers[i];
      auto& attn = *decoder.self_attn;
      const bool attn_entered = block({layer + ".self_attn",
                                       {{"q_proj", attn.q_proj.get()}, {"k_proj", attn.k_proj.get()}, {"v_proj", attn.v_proj.get()}},
                                       {"o_proj", attn.o_proj.get()}},
                                      [&](auto style) { attn.set_block_style(style); });
      // q_norm / k_norm of sharded attention see this rank's heads: their gradients are partial.
      if (attn.q_norm) norm(layer + ".self_attn.q_norm", attn_entered);
      if (attn.k_norm) norm(layer + ".self_attn.k_norm", attn_entered);
      if (auto& mlp = decoder.mlp)
        block({layer + ".mlp", {{"gate_proj", mlp->gate_proj.get()}, {"up_proj", mlp->up_proj.get()}},
               {"down_proj", mlp->down_proj.get()}},
              [&](auto style) { mlp->set_block_style(style); });
      if (auto& moe = decoder.moe) sparse_moe(layer + ".mlp", *moe, experts_tp);
      norm(layer + ".input_layernorm", false);
      norm(layer + ".post_attention_layernorm", false);
    }
    if (m.norm) norm("model.norm", false);
    if (model_.lm_head) linear("lm_head", *model_.lm_head, false);
    else if (m.embed_tokens) tied_head();
    MT_CHECK(!options_.loss_parallel || report_.logits_vocab_sharded || !model_.holds_head(),
             "--loss_parallel needs the output layer sharded over the vocab (lm_head colwise, or a tied head with "
             "embed_tokens embedding_rowwise)");
    if (!model_.is_slice()) report_.unused_rules = plan_.unused_rules(paths_);  // a stage lacks some modules
    return report_;
  }

 private:
  using Style = TpStyle;

  bool has_style(const std::string& module, std::initializer_list<Style> styles) const {
    auto style = plan_.style_of(module + ".weight");
    return style && std::find(styles.begin(), styles.end(), *style) != styles.end();
  }

  // Keeps this rank's chunk of `dim`, or with blocks > 1 (packed) the same chunk of every block,
  // on g's mesh dim (tp, or under router masking its etp blocks, which the ep ranks hold alike).
  void shard_param(const std::string& name, at::Tensor& param, int64_t dim, const Sharding& s, const Group& g,
                   int64_t blocks = 1) {
    at::NoGradGuard no_grad;
    auto& place = model_.placement(name);
    MT_CHECK(place.is_whole(), "tensor parallelism expects unsharded parameters; ", name, " is already sharded");
    const int64_t length = s.sizes[g.rank()];
    const auto shard = nn::Placement::packed_shard(dim, blocks);
    if (g.dim() == MeshDim::Tp) place.split(MeshDim::Tp, {{MeshDim::Tp, shard}});
    else place.split(MeshDim::Tp, {{MeshDim::Ep, nn::Placement::replicate()}, {g.dim(), shard}});
    if (blocks > 1) place.pack(dim, blocks, s.offset, length);
    else place.narrow(dim, s.offset, length);
    auto shape = param.sizes().vec();
    shape[dim] = length * blocks;
    param.set_data(place.local_of(param, shape));
  }

  // Replicated over tp, with a gradient that is each rank's partial sum (summed over tp after backward).
  void mark_partial(const std::string& name) {
    model_.placement(name).split(MeshDim::Tp, {{MeshDim::Tp, nn::Placement::partial()}});
  }

  // Checks the block's rules and installs its entry when its input projections are all of the
  // colwise family: one f (or one all-gather on T under sequence parallelism) for all of them,
  // as Megatron does; the rowwise output projection is the exit. Returns whether it entered.
  bool block(const Block& b, const std::function<void(std::shared_ptr<nn::BlockStyle>)>& set_style) {
    bool colwise_in = true, packed_in = true, any_packed = false;
    for (auto& [name, _] : b.inputs) {
      const auto child = b.path + "." + name;
      colwise_in &= has_style(child, {Style::Colwise, Style::PackedColwise, Style::LocalColwise});
      packed_in &= has_style(child, {Style::PackedColwise});
      any_packed |= has_style(child, {Style::PackedColwise});
    }
    const auto out = b.path + "." + b.output.first;
    const bool rowwise_out = has_style(out, {Style::Rowwise, Style::PackedRowwise, Style::LocalRowwise});
    MT_CHECK(!options_.sequence_parallel || (colwise_in && rowwise_out),
             "sequence parallelism needs every attention and MLP block sharded colwise in, rowwise out by the "
             "tp_plan; ", b.path, " is not");
    // A rule on the block itself: all_reduce (gather), the block's one reduction at its exit.
    paths_.push_back(b.path);
    if (auto block_style = plan_.style_of(b.path))
      MT_CHECK(*block_style == Style::AllReduce && colwise_in && rowwise_out, "style ", tp_style_name(*block_style),
               " on ", b.path, ": a block takes all_reduce (gather) only, with input projections of the colwise "
               "family and a rowwise-family output projection, where it reduces");
    // Packed features only meet their own kind: all of the block packed, or none of it.
    MT_CHECK(packed_in == has_style(out, {Style::PackedRowwise}) && (packed_in || !any_packed), b.path,
             ": packed_colwise input projections need a packed_rowwise output projection, and the other way round");
    set_style(colwise_in ? std::make_shared<BlockEntry>(g_, options_.sequence_parallel ? Input::SequenceSharded
                                                                                       : Input::Replicated)
                         : nn::pass_through_block());
    for (auto& [name, layer] : b.inputs) linear(b.path + "." + name, *layer, colwise_in);
    linear(out, *b.output.second, colwise_in);
    return colwise_in;
  }

  // A Linear: sharded by its style, or reported as left whole.
  // entered: its block's entry already received the input for it.
  void linear(const std::string& path, nn::Linear& layer, bool entered) {
    paths_.push_back(path);
    auto style = plan_.style_of(path + ".weight");
    if (!style) {
      report_.unsharded_layers.push_back(path);
      // An unsharded lm_head gathers T; a router inside its MoE block sees whole T already.
      if (options_.sequence_parallel && path == "lm_head") layer.set_style(std::make_shared<SequenceGatherLinear>(g_));
      return;
    }
    const bool inside_block = path != "lm_head";
    const Input input = entered ? Input::Local : options_.sequence_parallel ? Input::SequenceSharded : Input::Replicated;
    const Output output = options_.sequence_parallel && inside_block ? Output::SequenceScatter : Output::Reduced;
    switch (*style) {
      case Style::Colwise:
      case Style::ColwiseGatherOutput:
      case Style::LocalColwise: return colwise(path, layer, *style, entered, input);
      case Style::Rowwise:
      case Style::RowwiseSplitInput:
      case Style::LocalRowwise: return rowwise(path, layer, *style, entered, output);
      case Style::PackedColwise:
      case Style::PackedRowwise: return packed(path, layer, *style, input, output);
      default: return reject(path, *style);
    }
  }

  void colwise(const std::string& path, nn::Linear& layer, Style style, bool entered, Input input) {
    // Upstream's local_* layers leave the one f and g to the block: so do they here.
    MT_CHECK(style != Style::LocalColwise || entered, "style local_colwise on ", path,
             ": its block's input projections must all be of the colwise family, whose entry gives it its input");
    const auto& c = model_.config();
    const int64_t tp = g_.size();
    const bool kv = path.ends_with("self_attn.k_proj") || path.ends_with("self_attn.v_proj");
    if (kv && c.num_key_value_heads < tp) {
      // kv heads replicated over tp / kv ranks: every rank holds the whole projection and computes
      // the one kv head its query heads use (its gradient summed over tp by the style's f).
      const int64_t kv_head = g_.rank() / (tp / c.num_key_value_heads);
      layer.set_style(std::make_shared<ReplicatedKvStyle>(g_, input, kv_head * c.head_dim, c.head_dim));
      return;
    }
    auto s = chunk(layer.weight.size(0), g_);
    shard_param(path + ".weight", layer.weight, 0, s, g_);
    if (layer.bias.defined()) shard_param(path + ".bias", layer.bias, 0, s, g_);
    const bool is_head = path == "lm_head";
    MT_CHECK(!is_head || style != Style::Colwise || options_.loss_parallel,
             "lm_head colwise leaves the logits sharded over the vocab: use colwise_gather_output, or --loss_parallel");
    if (is_head && options_.loss_parallel) {
      report_.logits_vocab_sharded = true;
      report_.vocab_offset = s.offset;
    }
    const bool gather = style == Style::ColwiseGatherOutput && !(is_head && options_.loss_parallel);
    layer.set_style(std::make_shared<ColwiseStyle>(g_, input, gather, s.sizes));
  }

  void rowwise(const std::string& path, nn::Linear& layer, Style style, bool entered, Output output) {
    // The block's one reduction happens here, where upstream's gather parent sums local_rowwise's
    // partial outputs (and its bias is added once, after it).
    MT_CHECK(style != Style::LocalRowwise || entered, "style local_rowwise on ", path,
             ": its partial sums are reduced at the block's exit, which needs the block's input projections "
             "all of the colwise family");
    auto s = chunk(layer.weight.size(1), g_);
    shard_param(path + ".weight", layer.weight, 1, s, g_);
    // Added to this rank's sequence shard only: its gradient is partial.
    if (layer.bias.defined() && output == Output::SequenceScatter) mark_partial(path + ".bias");
    layer.set_style(std::make_shared<RowwiseStyle>(g_, style == Style::RowwiseSplitInput, output, s.sizes));
  }

  void packed(const std::string& path, nn::Linear& layer, Style style, Input input, Output output) {
    // Rank r's [gate_r | up_r] outputs must meet the same features of a packed down projection.
    MT_CHECK(path.find(".mlp.") != std::string::npos, "style ", tp_style_name(style), " on ", path,
             ": packed styles shard gate / up projections and their down projection only");
    const bool colwise = style == Style::PackedColwise;
    const int64_t dim = colwise ? 0 : 1;
    auto s = packed_chunk(layer.weight.size(dim), g_, path + ".weight");
    shard_param(path + ".weight", layer.weight, dim, s, g_, 2);
    if (colwise) {
      if (layer.bias.defined()) shard_param(path + ".bias", layer.bias, 0, s, g_, 2);
      layer.set_style(std::make_shared<ColwiseStyle>(g_, input, false, s.sizes));
    } else {
      if (layer.bias.defined() && output == Output::SequenceScatter) mark_partial(path + ".bias");
      layer.set_style(std::make_shared<RowwiseStyle>(g_, false, output, s.sizes));
    }
  }

  [[noreturn]] void reject(const std::string& path, Style style) {
    switch (style) {
      case Style::AllReduce:
        fail("style all_reduce (gather) on ", path, ": it sums a block's partial outputs, so it applies to an "
             "attention or MLP block (or the experts), not to a Linear");
      case Style::Local:
        fail("style local on ", path, ": upstream loads it as the weight divided by the mesh size for a parent's "
             "sum, which does not train like the serial model; use local_colwise / local_rowwise");
      case Style::ReplicatedWithGradAllreduce:
        fail("style replicated_with_grad_allreduce on ", path, ": a Linear sees every token and head on each rank, "
             "so its gradient is whole already; summing it over tp would count it tp times");
      default: fail("style ", tp_style_name(style), " on ", path, " is not supported for a Linear");
    }
  }

  // Sequence-parallel norms see this rank's tokens, per-head norms of an entered attention this
  // rank's heads: either way their gradients are partial, and summed over tp.
  void norm(const std::string& path, bool per_head_sharded) {
    paths_.push_back(path);
    auto style = plan_.style_of(path + ".weight");
    const bool partial = options_.sequence_parallel || per_head_sharded;
    MT_CHECK(!style || *style == Style::SequenceParallel || *style == Style::ReplicatedWithGradAllreduce, "style ",
             tp_style_name(*style), " on ", path,
             " is not supported for a norm (use sequence_parallel or replicated_with_grad_allreduce)");
    MT_CHECK(style != Style::ReplicatedWithGradAllreduce || partial, "style replicated_with_grad_allreduce on ", path,
             ": this norm sees every token and head on each rank, so its gradient is whole already; summing it over "
             "tp would count it tp times");
    if (partial) mark_partial(path + ".weight");
  }

  void embedding(const std::string& path, nn::Embedding& embedding) {
    paths_.push_back(path);
    auto style = plan_.style_of(path + ".weight");
    const bool sp = options_.sequence_parallel;
    if (!style) {
      report_.unsharded_layers.push_back(path);
      if (sp) embedding.set_style(std::make_shared<SequenceScatterEmbedding>(g_));
      return;
    }
    MT_CHECK(*style == Style::EmbeddingRowwise, "style ", tp_style_name(*style), " on ", path,
             " is not supported for an Embedding (use embedding_rowwise)");
    vocab_ = chunk(embedding.weight.size(0), g_);
    shard_param(path + ".weight", embedding.weight, 0, *vocab_, g_);
    embedding.set_style(std::make_shared<EmbeddingRowwiseStyle>(g_, vocab_->offset, sp ? Output::SequenceScatter
                                                                                       : Output::Reduced));
  }

  // The tied head reads the embedding weight: colwise over the vocab when that is sharded.
  void tied_head() {
    const bool sp = options_.sequence_parallel;
    if (vocab_) {
      model_.tied_head_style = std::make_shared<ColwiseStyle>(g_, sp ? Input::SequenceSharded : Input::Replicated,
                                                              !options_.loss_parallel, vocab_->sizes);
      report_.logits_vocab_sharded = options_.loss_parallel;
      report_.vocab_offset = vocab_->offset;
    } else if (sp) {
      model_.tied_head_style = std::make_shared<SequenceGatherLinear>(g_);
    }
  }

  // The router stays whole; the experts split inside when the plan says so (gate_up_proj
  // packed_colwise on I, down_proj rowwise on I) over experts_tp (tp, or its etp blocks under
  // router masking): every rank of it computes its slice of every expert. Under sequence
  // parallelism the block routes and computes the whole sequence and keeps its shard.
  void sparse_moe(const std::string& path, nn::SparseMoe& moe, Group& experts_tp) {
    linear(path + ".gate", *moe.gate, false);
    if (options_.sequence_parallel) moe.set_block_style(std::make_shared<SequenceGatheredMoe>(g_));
    const std::string experts = path + ".experts";
    for (const auto& name : {experts, experts + ".gate_up_proj", experts + ".down_proj"}) paths_.push_back(name);
    auto style = [&](const std::string& param) {
      auto s = plan_.style_of(experts + "." + param);
      // The experts module's own rule (moe_tp_experts, or upstream's older gather) shards nothing.
      return s && *s != Style::MoeTpExperts && *s != Style::AllReduce ? s : std::nullopt;
    };
    const auto gate_up = style("gate_up_proj"), down = style("down_proj");
    if ((!gate_up && !down) || experts_tp.size() == 1) return;
    MT_CHECK(gate_up == Style::PackedColwise && down == Style::Rowwise, experts,
             ": the experts shard gate_up_proj packed_colwise and down_proj rowwise together; the tp_plan gives ",
             gate_up ? tp_style_name(*gate_up) : "none", " and ", down ? tp_style_name(*down) : "none");
    auto& weights = *moe.experts;
    auto s = packed_chunk(weights.gate_up_proj.size(1), experts_tp, experts + ".gate_up_proj");
    shard_param(experts + ".gate_up_proj", weights.gate_up_proj, 1, s, experts_tp, 2);
    shard_param(experts + ".down_proj", weights.down_proj, 2, s, experts_tp);
    moe.set_dispatcher(std::make_shared<TpExpertsDispatcher>(moe.dispatcher(), experts_tp));
  }

  models::LlamaForCausalLM& model_;
  Group& g_;
  const TpPlan& plan_;
  const TpOptions& options_;
  TpReport report_;
  std::vector<std::string> paths_;  // every module path a rule may name
  std::optional<Sharding> vocab_;   // the embedding's, when sharded
};

}  // namespace

std::vector<int64_t> sequence_shards(int64_t seq_len, int64_t tp) {
  MT_CHECK(seq_len % tp == 0, "sequence parallelism shards the sequence evenly over tp: seq_len ", seq_len,
           " is not divisible by tp_size ", tp);
  return std::vector<int64_t>(static_cast<size_t>(tp), seq_len / tp);
}

TpReport apply_tensor_parallel(models::LlamaForCausalLM& model, Group& g, Group& experts_tp, const TpPlan& plan,
                               const TpOptions& options) {
  const auto& c = model.config();
  const int64_t tp = g.size();
  MT_CHECK(c.num_attention_heads % tp == 0, "tp_size ", tp, " does not divide num_attention_heads ",
           c.num_attention_heads);
  MT_CHECK(c.num_key_value_heads % tp == 0 || tp % c.num_key_value_heads == 0, "num_key_value_heads ",
           c.num_key_value_heads, " is not divisible by tp_size ", tp, " or vice versa");
  return Sharder(model, g, plan, options).run(experts_tp);
}

}  // namespace meshtrain::parallel

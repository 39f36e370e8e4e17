#include "parallel/tensor_parallel.h"

#include <algorithm>
#include <numeric>
#include <set>
#include <tuple>

#include "dist/comm_autograd.h"
#include "nn/moe.h"
#include "nn/rms_norm.h"
#include "parallel/expert_parallel.h"
#include "util/check.h"

namespace meshtrain::parallel {

namespace {

using dist::Group;

int64_t last_dim(const at::Tensor& t) { return t.dim() - 1; }

// How a colwise-family layer receives its input.
enum class Input {
  Replicated,       // f: identity forward, all-reduce of the input gradient
  Local,            // already received by the block's entry, no communication
  SequenceSharded,  // all-gather on T, backward reduce-scatter (lm_head under sequence parallel)
};

at::Tensor receive(const at::Tensor& x, Group& g, Input input) {
  switch (input) {
    case Input::Replicated: return dist::copy_to_group(x, g);
    case Input::Local: return x;
    case Input::SequenceSharded: return dist::all_gather_autograd(x, g, 1, sequence_shards(x.size(1) * g.size(), g.size()));
  }
  return x;
}

// How a rowwise-family layer hands on its partial output.
enum class Output {
  Reduced,          // g: all-reduce, backward identity
  SequenceScatter,  // reduce-scatter on T, backward all-gather (sequence parallel)
};

at::Tensor hand_on(const at::Tensor& y, Group& g, Output output) {
  switch (output) {
    case Output::Reduced: return dist::reduce_from_group(y, g);
    case Output::SequenceScatter: return dist::reduce_scatter_autograd(y, g, 1, sequence_shards(y.size(1), g.size()));
  }
  return y;
}

// colwise: output sharded on the last dim; optionally gathered (lm_head).
struct ColwiseStyle : nn::LinearStyle {
  ColwiseStyle(Group& g, Input input, bool gather, std::vector<int64_t> out_sizes)
      : g_(g), input_(input), gather_(gather), out_sizes_(std::move(out_sizes)) {}
  at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const override {
    auto y = at::linear(receive(x, g_, input_), w, b);
    return gather_ ? dist::gather_from_group(y.contiguous(), g_, last_dim(y), out_sizes_) : y;
  }
  Group& g_;
  Input input_;
  bool gather_;
  std::vector<int64_t> out_sizes_;
};

// kv heads replicated over tp / kv ranks: every rank holds the whole k/v projection and computes
// the one kv head its query heads use. The weight gradient, nonzero on that head's rows only, is
// summed over tp, which adds up the contributions of all the head's query heads.
struct ReplicatedKvStyle : nn::LinearStyle {
  ReplicatedKvStyle(Group& g, Input input, int64_t first_row, int64_t rows)
      : g_(g), input_(input), first_row_(first_row), rows_(rows) {}
  at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const override {
    auto mine = [&](const at::Tensor& t) { return dist::copy_to_group(t, g_).narrow(0, first_row_, rows_); };
    return at::linear(receive(x, g_, input_), mine(w), b.defined() ? mine(b) : b);
  }
  Group& g_;
  Input input_;
  int64_t first_row_, rows_;
};

// rowwise: input sharded on the last dim (split here when split_input); the replicated bias is
// added once, after the reduction.
struct RowwiseStyle : nn::LinearStyle {
  RowwiseStyle(Group& g, bool split_input, Output output, std::vector<int64_t> in_sizes)
      : g_(g), split_(split_input), output_(output), in_sizes_(std::move(in_sizes)) {}
  at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const override {
    auto local = split_ ? dist::scatter_to_group(x, g_, last_dim(x), in_sizes_) : x;
    auto y = hand_on(at::linear(local, w), g_, output_);
    return b.defined() ? y + b : y;
  }
  Group& g_;
  bool split_;
  Output output_;
  std::vector<int64_t> in_sizes_;
};

// embedding_rowwise: rank r owns vocab rows [start, start + rows); other ids look up zeros;
// the partial embeddings are summed (all-reduce, or reduce-scatter on T under sequence parallel).
struct EmbeddingRowwiseStyle : nn::LinearStyle {
  EmbeddingRowwiseStyle(Group& g, int64_t start, Output output) : g_(g), start_(start), output_(output) {}
  at::Tensor embedding(const at::Tensor& ids, const at::Tensor& w) const override {
    auto local = ids - start_;
    auto outside = (local < 0).logical_or(local >= w.size(0));
    auto y = at::embedding(w.size(0) ? w : at::zeros({1, w.size(1)}, w.options()), local.masked_fill(outside, 0));
    return hand_on(y.masked_fill(outside.unsqueeze(-1), 0.0), g_, output_);
  }
  Group& g_;
  int64_t start_;
  Output output_;
};

// A replicated embedding under sequence parallelism: each rank keeps its T shard of the output.
struct SequenceScatterEmbedding : nn::LinearStyle {
  explicit SequenceScatterEmbedding(Group& g) : g_(g) {}
  at::Tensor embedding(const at::Tensor& ids, const at::Tensor& w) const override {
    return dist::scatter_to_group(at::embedding(w, ids), g_, 1, sequence_shards(ids.size(1), g_.size()));
  }
  Group& g_;
};

// A replicated Linear reading the sequence-sharded stream (an unsharded lm_head under sequence
// parallel): gather T, every rank computes the same output (backward: its own T slice).
struct SequenceGatherLinear : nn::LinearStyle {
  explicit SequenceGatherLinear(Group& g) : g_(g) {}
  at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const override {
    return at::linear(dist::gather_from_group(x, g_, 1, sequence_shards(x.size(1) * g_.size(), g_.size())), w, b);
  }
  Group& g_;
};

// The entry of a block whose input projections are all colwise: one f (or, under sequence
// parallelism, one all-gather on T) for all of them, as Megatron does, not one per projection.
// Its rowwise output projection is the exit.
struct BlockEntry : nn::BlockStyle {
  BlockEntry(Group& g, Input input) : g_(g), input_(input) {}
  at::Tensor enter(const at::Tensor& x) const override { return receive(x, g_, input_); }
  Group& g_;
  Input input_;
};

// A MoE block under sequence parallelism: every tp rank routes and computes the whole sequence
// (backward: its own T slice of the gradient), and keeps its T shard of the output (backward:
// the gradient all-gathered). The experts' own f and sum over tp run inside.
struct SequenceGatheredMoe : nn::BlockStyle {
  explicit SequenceGatheredMoe(Group& g) : g_(g) {}
  at::Tensor enter(const at::Tensor& x) const override {
    return dist::gather_from_group(x, g_, 1, sequence_shards(x.size(1) * g_.size(), g_.size()));
  }
  at::Tensor leave(const at::Tensor& y) const override {
    return dist::scatter_to_group(y, g_, 1, sequence_shards(y.size(1), g_.size()));
  }
  Group& g_;
};

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

// Keeps this rank's chunk of `dim`, or with blocks > 1 (packed) the same chunk of every block.
void shard_param(models::LlamaForCausalLM& model, const std::string& name, at::Tensor& param, int64_t dim,
                 const Sharding& s, const Group& g, int64_t blocks = 1) {  // on g's mesh dim
  at::NoGradGuard no_grad;
  auto& place = model.placement(name);
  MT_CHECK(place.is_whole(), "tensor parallelism expects unsharded parameters; ", name, " is already sharded");
  const int64_t length = s.sizes[g.rank()];
  place.mesh_dims = {g.name()};
  place.placements = {nn::Placement::packed_shard(dim, blocks)};
  if (blocks > 1) place.pack(dim, blocks, s.offset, length);
  else place.narrow(dim, s.offset, length);
  auto shape = param.sizes().vec();
  shape[dim] = length * blocks;
  param.set_data(place.local_of(param, shape));
}

bool inside_block(const std::string& path) {
  return path.find(".self_attn.") != std::string::npos || path.find(".mlp.") != std::string::npos;
}

std::string parent_of(const std::string& path) { return path.substr(0, path.rfind('.')); }

// Whether every named child of a block is sharded by the plan with one of the styles.
bool all_styled(const TpPlan& plan, const std::string& block, const std::vector<std::string>& children,
                std::initializer_list<TpStyle> styles) {
  for (const auto& child : children) {
    auto style = plan.style_of(block + "." + child + ".weight");
    if (!style || std::find(styles.begin(), styles.end(), *style) == styles.end()) return false;
  }
  return true;
}

bool is_kv_projection(const std::string& path) {
  return path.ends_with("self_attn.k_proj") || path.ends_with("self_attn.v_proj");
}

// Shards one Linear by its style and gives it the style's collectives.
// entered: the block entry has already received the input for this layer.
void shard_linear(models::LlamaForCausalLM& model, const std::string& path, nn::Linear& linear, TpStyle style,
                  bool entered, Group& g, const TpOptions& options, TpReport& report) {
  const auto& c = model.config();
  const int64_t tp = g.size();
  const bool sp = options.sequence_parallel;
  const bool has_bias = linear.bias.defined();
  const Input input = entered ? Input::Local : sp ? Input::SequenceSharded : Input::Replicated;
  const Output output = sp && inside_block(path) ? Output::SequenceScatter : Output::Reduced;
  switch (style) {
    case TpStyle::Colwise:
    case TpStyle::ColwiseGatherOutput:
    case TpStyle::LocalColwise: {
      // Upstream's local_* layers leave the one f and g to the block: so do they here.
      MT_CHECK(style != TpStyle::LocalColwise || entered, "style local_colwise on ", path,
               ": its block's input projections must all be of the colwise family, whose entry gives it its input");
      if (is_kv_projection(path) && c.num_key_value_heads < tp) {
        const int64_t kv_head = g.rank() / (tp / c.num_key_value_heads);
        linear.set_style(std::make_shared<ReplicatedKvStyle>(g, input, kv_head * c.head_dim, c.head_dim));
        return;
      }
      auto s = chunk(linear.weight.size(0), g);
      shard_param(model, path + ".weight", linear.weight, 0, s, g);
      if (has_bias) shard_param(model, path + ".bias", linear.bias, 0, s, g);
      const bool is_head = path == "lm_head";
      MT_CHECK(!is_head || style != TpStyle::Colwise || options.loss_parallel,
               "lm_head colwise leaves the logits sharded over the vocab: use colwise_gather_output, or --loss_parallel");
      const bool gather = style == TpStyle::ColwiseGatherOutput && !(is_head && options.loss_parallel);
      if (is_head && options.loss_parallel) {
        report.logits_vocab_sharded = true;
        report.vocab_offset = s.offset;
      }
      linear.set_style(std::make_shared<ColwiseStyle>(g, input, gather, s.sizes));
      return;
    }
    case TpStyle::Rowwise:
    case TpStyle::RowwiseSplitInput:
    case TpStyle::LocalRowwise: {
      // The block's one reduction happens here, where upstream's gather parent sums local_rowwise's
      // partial outputs (and its bias is added once, after it).
      MT_CHECK(style != TpStyle::LocalRowwise || entered, "style local_rowwise on ", path,
               ": its partial sums are reduced at the block's exit, which needs the block's input projections "
               "all of the colwise family");
      auto s = chunk(linear.weight.size(1), g);
      shard_param(model, path + ".weight", linear.weight, 1, s, g);
      // Added to this rank's sequence shard only: its gradient is partial.
      if (has_bias && output == Output::SequenceScatter) report.partial_grad_params.push_back(path + ".bias");
      linear.set_style(std::make_shared<RowwiseStyle>(g, style == TpStyle::RowwiseSplitInput, output, s.sizes));
      return;
    }
    case TpStyle::PackedColwise:
    case TpStyle::PackedRowwise: {
      // Rank r's [gate_r | up_r] outputs must meet the same features of a packed down projection.
      MT_CHECK(path.find(".mlp.") != std::string::npos, "style ", tp_style_name(style), " on ", path,
               ": packed styles shard gate / up projections and their down projection only");
      const bool colwise = style == TpStyle::PackedColwise;
      const int64_t dim = colwise ? 0 : 1;
      auto s = packed_chunk(linear.weight.size(dim), g, path + ".weight");
      shard_param(model, path + ".weight", linear.weight, dim, s, g, 2);
      if (colwise) {
        if (has_bias) shard_param(model, path + ".bias", linear.bias, 0, s, g, 2);
        linear.set_style(std::make_shared<ColwiseStyle>(g, input, false, s.sizes));
      } else {
        if (has_bias && output == Output::SequenceScatter) report.partial_grad_params.push_back(path + ".bias");
        linear.set_style(std::make_shared<RowwiseStyle>(g, false, output, s.sizes));
      }
      return;
    }
    case TpStyle::AllReduce:
      fail("style all_reduce (gather) on ", path, ": it sums a block's partial outputs, so it applies to an attention "
           "or MLP block (or the experts), not to a Linear");
    case TpStyle::Local:
      fail("style local on ", path, ": upstream loads it as the weight divided by the mesh size for a parent's sum, "
           "which does not train like the serial model; use local_colwise / local_rowwise");
    case TpStyle::ReplicatedWithGradAllreduce:
      fail("style replicated_with_grad_allreduce on ", path, ": a Linear sees every token and head on each rank, so "
           "its gradient is whole already; summing it over tp would count it tp times");
    case TpStyle::EmbeddingRowwise:
    case TpStyle::SequenceParallel:
    case TpStyle::MoeTpExperts:
      fail("style ", tp_style_name(style), " on ", path, " is not supported for a Linear");
  }
}

// The experts of a MoE block, sharded inside when the plan says so (gate_up_proj packed_colwise
// on I, down_proj rowwise on I) over g (tp, or its etp blocks under router masking): every rank
// of g computes its slice of every expert.
void split_experts_inside(models::LlamaForCausalLM& model, const std::string& block, nn::SparseMoe& moe,
                          const TpPlan& plan, Group& g) {
  const std::string path = block + ".experts";
  auto style = [&](const std::string& param) {
    auto s = plan.style_of(path + "." + param);
    // The experts module's own rule (moe_tp_experts, or upstream's older gather) shards nothing.
    return s && *s != TpStyle::MoeTpExperts && *s != TpStyle::AllReduce ? s : std::nullopt;
  };
  const auto gate_up = style("gate_up_proj"), down = style("down_proj");
  if ((!gate_up && !down) || g.size() == 1) return;
  MT_CHECK(gate_up == TpStyle::PackedColwise && down == TpStyle::Rowwise, path,
           ": the experts shard gate_up_proj packed_colwise and down_proj rowwise together; the tp_plan gives ",
           gate_up ? tp_style_name(*gate_up) : "none", " and ", down ? tp_style_name(*down) : "none");
  auto& experts = *moe.experts;
  auto s = packed_chunk(experts.gate_up_proj.size(1), g, path + ".gate_up_proj");
  shard_param(model, path + ".gate_up_proj", experts.gate_up_proj, 1, s, g, 2);
  shard_param(model, path + ".down_proj", experts.down_proj, 2, s, g);
  moe.set_dispatcher(tensor_parallel_experts(nn::local_dispatcher(), g));
}

}  // namespace

std::vector<int64_t> sequence_shards(int64_t seq_len, int64_t tp) {
  MT_CHECK(seq_len % tp == 0, "sequence parallelism shards the sequence evenly over tp: seq_len ", seq_len,
           " is not divisible by tp_size ", tp);
  return std::vector<int64_t>(static_cast<size_t>(tp), seq_len / tp);
}

TpReport apply_tensor_parallel(models::LlamaForCausalLM& model, const dist::DeviceMesh& mesh, const TpPlan& plan,
                               const TpOptions& options) {
  auto& g = mesh.group("tp");
  const auto& c = model.config();
  const int64_t tp = g.size();
  const bool sp = options.sequence_parallel;
  MT_CHECK(c.num_attention_heads % tp == 0, "tp_size ", tp, " does not divide num_attention_heads ",
           c.num_attention_heads);
  MT_CHECK(c.num_key_value_heads % tp == 0 || tp % c.num_key_value_heads == 0, "num_key_value_heads ",
           c.num_key_value_heads, " is not divisible by tp_size ", tp, " or vice versa");
  TpReport report;
  // Blocks whose input projections are all of the colwise family get one entry collective for
  // all of them. Sequence parallelism needs that everywhere, and the rowwise outputs that
  // reduce-scatter.
  std::set<std::string> entered_blocks;
  std::vector<std::string> paths;  // every module path a rule may name
  for (size_t i = 0; i < model.model->layers.size(); ++i) {
    const std::string layer = "model.layers." + std::to_string(i);
    auto& decoder_layer = *model.model->layers[i];
    struct Block {
      std::string path;
      std::vector<std::string> inputs;
      std::string output;
    };
    std::vector<Block> blocks = {{layer + ".self_attn", {"q_proj", "k_proj", "v_proj"}, "o_proj"}};
    if (decoder_layer.mlp) blocks.push_back({layer + ".mlp", {"gate_proj", "up_proj"}, "down_proj"});
    for (const auto& [block, inputs, output] : blocks) {
      const bool colwise_inputs =
          all_styled(plan, block, inputs, {TpStyle::Colwise, TpStyle::PackedColwise, TpStyle::LocalColwise});
      const bool rowwise_output =
          all_styled(plan, block, {output}, {TpStyle::Rowwise, TpStyle::PackedRowwise, TpStyle::LocalRowwise});
      MT_CHECK(!sp || (colwise_inputs && rowwise_output),
               "sequence parallelism needs every attention and MLP block sharded colwise in, rowwise out by the "
               "tp_plan; ", block, " is not");
      // A rule on the block itself: all_reduce (gather), the block's one reduction at its exit.
      paths.push_back(block);
      if (auto block_style = plan.style_of(block))
        MT_CHECK(*block_style == TpStyle::AllReduce && colwise_inputs && rowwise_output, "style ",
                 tp_style_name(*block_style), " on ", block, ": a block takes all_reduce (gather) only, with input "
                 "projections of the colwise family and a rowwise-family output projection, where it reduces");
      // Packed features only meet their own kind: all of the block packed, or none of it.
      const bool packed_in = all_styled(plan, block, inputs, {TpStyle::PackedColwise});
      const bool packed_out = all_styled(plan, block, {output}, {TpStyle::PackedRowwise});
      bool any_packed = false;
      for (const auto& child : inputs) any_packed |= all_styled(plan, block, {child}, {TpStyle::PackedColwise});
      MT_CHECK(packed_in == packed_out && (packed_in || !any_packed), block,
               ": packed_colwise input projections need a packed_rowwise output projection, and the other way round");
      if (colwise_inputs) entered_blocks.insert(block);
    }
    auto entry = [&](const std::string& block) -> std::shared_ptr<nn::BlockStyle> {
      if (!entered_blocks.contains(block)) return nn::pass_through_block();
      return std::make_shared<BlockEntry>(g, sp ? Input::SequenceSharded : Input::Replicated);
    };
    decoder_layer.self_attn->set_block_style(entry(layer + ".self_attn"));
    if (auto& mlp = decoder_layer.mlp) mlp->set_block_style(entry(layer + ".mlp"));
    if (auto& moe = decoder_layer.moe) {
      split_experts_inside(model, layer + ".mlp", *moe, plan, mesh.group(mesh.expert_tensor_dim()));
      if (sp) moe->set_block_style(std::make_shared<SequenceGatheredMoe>(g));
    }
  }
  bool embedding_sharded = false;
  Sharding vocab{};
  for (auto& item : model.named_modules("", /*include_self=*/false)) {
    const std::string path = item.key();
    auto linear = std::dynamic_pointer_cast<nn::Linear>(item.value());
    auto embedding = std::dynamic_pointer_cast<nn::Embedding>(item.value());
    auto norm = std::dynamic_pointer_cast<nn::RMSNorm>(item.value());
    if (std::dynamic_pointer_cast<nn::Experts>(item.value()))  // sharded with their MoE block
      for (const auto& name : {path, path + ".gate_up_proj", path + ".down_proj"}) paths.push_back(name);
    if (!linear && !embedding && !norm) continue;
    paths.push_back(path);
    auto style = plan.style_of(path + ".weight");
    if (norm) {
      // Sequence-parallel norms see this rank's tokens; q_norm / k_norm of sharded attention
      // see this rank's heads: either way their gradients are partial, and summed over tp.
      const bool per_head = path.ends_with("q_norm") || path.ends_with("k_norm");
      const bool partial = sp || (per_head && entered_blocks.contains(parent_of(path)));
      MT_CHECK(!style || *style == TpStyle::SequenceParallel || *style == TpStyle::ReplicatedWithGradAllreduce,
               "style ", tp_style_name(*style), " on ", path,
               " is not supported for a norm (use sequence_parallel or replicated_with_grad_allreduce)");
      MT_CHECK(style != TpStyle::ReplicatedWithGradAllreduce || partial, "style replicated_with_grad_allreduce on ",
               path, ": this norm sees every token and head on each rank, so its gradient is whole already; summing "
               "it over tp would count it tp times");
      if (partial) report.partial_grad_params.push_back(path + ".weight");
      continue;
    }
    if (!style) {
      report.unsharded_layers.push_back(path);
      if (sp && embedding) embedding->set_style(std::make_shared<SequenceScatterEmbedding>(g));
      // An unsharded lm_head gathers T; a router inside its (entered) MoE block sees whole T already.
      if (sp && linear && !inside_block(path)) linear->set_style(std::make_shared<SequenceGatherLinear>(g));
      continue;
    }
    if (embedding) {
      MT_CHECK(*style == TpStyle::EmbeddingRowwise, "style ", tp_style_name(*style), " on ", path,
               " is not supported for an Embedding (use embedding_rowwise)");
      vocab = chunk(embedding->weight.size(0), g);
      embedding_sharded = true;
      shard_param(model, path + ".weight", embedding->weight, 0, vocab, g);
      embedding->set_style(std::make_shared<EmbeddingRowwiseStyle>(g, vocab.offset, sp ? Output::SequenceScatter
                                                                                        : Output::Reduced));
      continue;
    }
    shard_linear(model, path, *linear, *style, entered_blocks.contains(parent_of(path)), g, options, report);
  }
  if (!model.lm_head) {
    // The tied head reads the embedding weight: colwise over the vocab when that is sharded.
    if (embedding_sharded) {
      model.tied_head_style = std::make_shared<ColwiseStyle>(g, sp ? Input::SequenceSharded : Input::Replicated,
                                                             !options.loss_parallel, vocab.sizes);
      report.logits_vocab_sharded = options.loss_parallel;
      report.vocab_offset = vocab.offset;
    } else if (sp) {
      model.tied_head_style = std::make_shared<SequenceGatherLinear>(g);
    }
  }
  MT_CHECK(!options.loss_parallel || report.logits_vocab_sharded,
           "--loss_parallel needs the output layer sharded over the vocab (lm_head colwise, or a tied head with "
           "embed_tokens embedding_rowwise)");
  report.unused_rules = plan.unused_rules(paths);
  return report;
}

}  // namespace meshtrain::parallel

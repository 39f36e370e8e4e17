#include "parallel/tensor_parallel.h"

#include <numeric>

#include "dist/comm_autograd.h"
#include "util/check.h"

namespace meshtrain::parallel {

namespace {

using dist::Group;

int64_t last_dim(const at::Tensor& t) { return t.dim() - 1; }

// colwise: f on the input, output sharded on the last dim; optionally gathered (lm_head).
struct ColwiseStyle : nn::LinearStyle {
  ColwiseStyle(Group& g, bool gather, bool communicate, std::vector<int64_t> out_sizes)
      : g_(g), gather_(gather), communicate_(communicate), out_sizes_(std::move(out_sizes)) {}
  at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const override {
    auto y = at::linear(communicate_ ? dist::copy_to_group(x, g_) : x, w, b);
    return gather_ ? dist::gather_from_group(y.contiguous(), g_, last_dim(y), out_sizes_) : y;
  }
  Group& g_;
  bool gather_, communicate_;
  std::vector<int64_t> out_sizes_;
};

// rowwise: input sharded on the last dim (split here when split_input), output summed with g;
// the replicated bias is added once, after the sum.
struct RowwiseStyle : nn::LinearStyle {
  RowwiseStyle(Group& g, bool split_input, bool communicate, std::vector<int64_t> in_sizes)
      : g_(g), split_(split_input), communicate_(communicate), in_sizes_(std::move(in_sizes)) {}
  at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const override {
    auto local = split_ ? dist::scatter_to_group(x, g_, last_dim(x), in_sizes_) : x;
    auto y = at::linear(local, w);
    if (communicate_) y = dist::reduce_from_group(y, g_);
    return b.defined() ? y + b : y;
  }
  Group& g_;
  bool split_, communicate_;
  std::vector<int64_t> in_sizes_;
};

// embedding_rowwise: rank r owns vocab rows [start, start + rows); other ids look up zeros;
// the partial embeddings are summed with g.
struct EmbeddingRowwiseStyle : nn::LinearStyle {
  EmbeddingRowwiseStyle(Group& g, int64_t start) : g_(g), start_(start) {}
  at::Tensor embedding(const at::Tensor& ids, const at::Tensor& w) const override {
    auto local = ids - start_;
    auto outside = (local < 0).logical_or(local >= w.size(0));
    auto y = at::embedding(w.size(0) ? w : at::zeros({1, w.size(1)}, w.options()), local.masked_fill(outside, 0));
    y = y.masked_fill(outside.unsqueeze(-1), 0.0);
    return dist::reduce_from_group(y, g_);
  }
  Group& g_;
  int64_t start_;
};

// all_reduce / gather: the module's output summed over tp (backward: identity).
struct AllReduceStyle : nn::LinearStyle {
  explicit AllReduceStyle(Group& g) : g_(g) {}
  at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const override {
    return dist::reduce_from_group(at::linear(x, w, b), g_);
  }
  Group& g_;
};

// A replicated parameter whose gradient is summed over tp (each rank saw its own heads).
struct GradAllreduceStyle : nn::LinearStyle {
  explicit GradAllreduceStyle(Group& g) : g_(g) {}
  at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const override {
    return at::linear(x, dist::copy_to_group(w, g_), b.defined() ? dist::copy_to_group(b, g_) : b);
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

void shard_param(models::LlamaForCausalLM& model, const std::string& name, at::Tensor& param, int64_t dim,
                 const Sharding& s, const Group& g) {
  at::NoGradGuard no_grad;
  auto& place = model.placement(name);
  MT_CHECK(place.is_whole(), "tensor parallelism expects unsharded parameters; ", name, " is already sharded");
  param.set_data(param.narrow(dim, s.offset, s.sizes[g.rank()]).clone());
  place.mesh_dims = {"tp"};
  place.placements = {nn::Placement::shard(dim)};
  place.offset[dim] = s.offset;
}

}  // namespace

TpReport apply_tensor_parallel(models::LlamaForCausalLM& model, const dist::DeviceMesh& mesh, const TpPlan& plan) {
  auto& g = mesh.group("tp");
  const auto& c = model.config();
  const int64_t tp = g.size();
  MT_CHECK(c.num_attention_heads % tp == 0, "tp_size ", tp, " does not divide num_attention_heads ",
           c.num_attention_heads);
  MT_CHECK(c.num_key_value_heads % tp == 0, "tp_size ", tp, " does not divide num_key_value_heads ",
           c.num_key_value_heads, " (replicating kv heads when tp is a multiple of them is not implemented yet)");
  TpReport report;
  std::vector<std::string> paths;
  for (auto& item : model.named_modules("", /*include_self=*/false)) {
    const std::string path = item.key();
    auto linear = std::dynamic_pointer_cast<nn::Linear>(item.value());
    auto embedding = std::dynamic_pointer_cast<nn::Embedding>(item.value());
    if (!linear && !embedding) continue;
    paths.push_back(path);
    auto style = plan.style_of(path + ".weight");
    if (!style) {
      report.unsharded_layers.push_back(path);
      continue;
    }
    if (embedding) {
      MT_CHECK(*style == TpStyle::EmbeddingRowwise, "style ", tp_style_name(*style), " on ", path,
               " is not supported for an Embedding (use embedding_rowwise)");
      auto s = chunk(embedding->weight.size(0), g);
      shard_param(model, path + ".weight", embedding->weight, 0, s, g);
      embedding->set_style(std::make_shared<EmbeddingRowwiseStyle>(g, s.offset));
      continue;
    }
    const bool has_bias = linear->bias.defined();
    switch (*style) {
      case TpStyle::Colwise:
      case TpStyle::ColwiseGatherOutput:
      case TpStyle::LocalColwise: {
        auto s = chunk(linear->weight.size(0), g);
        shard_param(model, path + ".weight", linear->weight, 0, s, g);
        if (has_bias) shard_param(model, path + ".bias", linear->bias, 0, s, g);
        linear->set_style(std::make_shared<ColwiseStyle>(g, *style == TpStyle::ColwiseGatherOutput,
                                                         *style != TpStyle::LocalColwise, s.sizes));
        break;
      }
      case TpStyle::Rowwise:
      case TpStyle::RowwiseSplitInput:
      case TpStyle::LocalRowwise: {
        auto s = chunk(linear->weight.size(1), g);
        shard_param(model, path + ".weight", linear->weight, 1, s, g);
        linear->set_style(std::make_shared<RowwiseStyle>(g, *style == TpStyle::RowwiseSplitInput,
                                                         *style != TpStyle::LocalRowwise, s.sizes));
        break;
      }
      case TpStyle::AllReduce:
        linear->set_style(std::make_shared<AllReduceStyle>(g));
        break;
      case TpStyle::ReplicatedWithGradAllreduce:
        linear->set_style(std::make_shared<GradAllreduceStyle>(g));
        break;
      case TpStyle::Local:
      case TpStyle::EmbeddingRowwise:
        fail("style ", tp_style_name(*style), " on ", path, " is not supported for a Linear");
    }
  }
  report.unused_rules = plan.unused_rules(paths);
  return report;
}

}  // namespace meshtrain::parallel

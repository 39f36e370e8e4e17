#include "parallel/pipeline_stage.h"

#include <numeric>

#include "dist/collectives.h"
#include "dist/device_mesh.h"
#include "parallel/parallel_options.h"
#include "util/check.h"

namespace meshtrain::parallel {

namespace {
// "pp_size 2" or "pp_size 2 x pp_virtual_stages 2 (4 stages)", for messages.
std::string stages_text(int64_t ranks, int64_t virtual_stages) {
  if (virtual_stages == 1) return str_cat("pp_size ", ranks);
  return str_cat("pp_size ", ranks, " x pp_virtual_stages ", virtual_stages, " (", ranks * virtual_stages, " stages)");
}
}  // namespace

std::vector<StageLayers> split_stages(int64_t layers, int64_t ranks, const std::vector<int64_t>& layers_per_stage,
                                      int64_t virtual_stages) {
  const int64_t stages = ranks * virtual_stages;
  const auto text = stages_text(ranks, virtual_stages);
  if (stages > layers)
    throw UsageError(str_cat(text, " asks for more pipeline stages than the model's ", layers, " decoder layers"));
  std::vector<int64_t> counts = layers_per_stage;
  if (counts.empty()) {
    if (layers % stages != 0)
      throw UsageError(str_cat(text, " does not divide the model's ", layers,
                               " decoder layers evenly; give --pp_layers_per_stage"));
    counts.assign(static_cast<size_t>(stages), layers / stages);
  }
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  const bool positive = std::all_of(counts.begin(), counts.end(), [](int64_t n) { return n >= 1; });
  if (static_cast<int64_t>(counts.size()) != stages || total != layers || !positive)
    throw UsageError(str_cat("--pp_layers_per_stage gives ", counts.size(), " stage(s) of ", total, " layers in all; ",
                             text, " needs ", stages, " counts of at least 1 summing to the model's ", layers,
                             " decoder layers"));
  std::vector<StageLayers> out;
  int64_t begin = 0;
  for (auto n : counts) {
    out.push_back({begin, begin + n});
    begin += n;
  }
  return out;
}

std::vector<int64_t> parse_layers_per_stage(const std::string& text, int64_t stages) {
  std::vector<int64_t> counts;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string part = text.substr(start, comma - start);
    size_t used = 0;
    int64_t n = 0;
    try {
      n = std::stoll(part, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (part.empty() || used != part.size())
      throw UsageError(str_cat("--pp_layers_per_stage must be a number or a comma-separated list of numbers, got '",
                               text, "'"));
    counts.push_back(n);
    start = comma + 1;
  }
  if (counts.size() == 1 && stages > 1) counts.assign(static_cast<size_t>(stages), counts.front());
  return counts;
}

void apply_pipeline_stage(models::LlamaForCausalLM& model, const dist::DeviceMesh& mesh,
                          const PipelineOptions& options) {
  const int64_t ranks = mesh.size(MeshDim::Pp);
  if (ranks == 1) return;
  const auto& c = model.config();
  // The aux loss is summed over the stages per micro-batch (parallel/pipeline_routing.h), which
  // needs one stage per rank and whole backwards.
  if (c.moe && (options.virtual_stages > 1 || splits_backward(options.schedule)))
    throw UsageError(str_cat("MoE models (", c.model_type, ") run under pipeline parallelism with one stage per rank "
                             "and whole backwards (GPipe, 1F1B); ", pipeline_schedule_name(options.schedule),
                             " with pp_virtual_stages ", options.virtual_stages, " does not support them yet"));
  const int64_t rank = mesh.coordinate(MeshDim::Pp);
  const auto split = split_stages(c.num_hidden_layers, ranks, options.layers_per_stage, options.virtual_stages);
  std::vector<std::pair<int64_t, int64_t>> kept;
  for (auto stage : rank_stages(rank, ranks, options.virtual_stages))
    kept.emplace_back(split[stage].begin, split[stage].end);
  // Stage 0 is on the first rank, the last stage on the last rank.
  const bool first = rank == 0, last = rank == ranks - 1;
  model.keep_slice(kept, first, last);
  // A tied embedding is the input of the first stage and the head of the last: one weight held
  // twice, its two gradients summed over the pair so that the copies stay equal.
  if (c.tie_word_embeddings && (first || last)) {
    auto& place = model.placement("model.embed_tokens.weight");
    place.mesh_dims.push_back(MeshDim::PpEnds);
    place.placements.push_back(nn::Placement::replicate());
  }
}

StageLink::StageLink(dist::Group& pp, int64_t stages) : pp_(pp), stages_(stages) {}

StageLink::~StageLink() = default;

int StageLink::rank_of(int64_t stage) const { return static_cast<int>(stage % pp_.size()); }

void StageLink::post(int64_t tag, int64_t src_stage, const std::vector<int64_t>& shape,
                     const at::TensorOptions& options) {
  if (recvs_.count(tag)) return;
  Pending p{at::empty(shape, options), {}};
  p.work = dist::recv_async(pp_, p.buffer, rank_of(src_stage), static_cast<int>(tag));
  recvs_.emplace(tag, std::move(p));
}

at::Tensor StageLink::take(int64_t tag, const char* what, int64_t stage, int64_t m) {
  auto it = recvs_.find(tag);
  MT_CHECK(it != recvs_.end(), "pipeline stage ", stage, ": no receive posted for the ", what, " of micro-batch ", m);
  dist::wait_work(pp_, it->second.work, what);
  auto t = it->second.buffer;
  recvs_.erase(it);
  return t;
}

void StageLink::post_activation(int64_t stage, int64_t m, const std::vector<int64_t>& shape,
                                const at::TensorOptions& options) {
  if (!first(stage)) post(tag(false, stage, m), stage - 1, shape, options);
}

at::Tensor StageLink::take_activation(int64_t stage, int64_t m) {
  return take(tag(false, stage, m), "pipeline activation", stage, m);
}

void StageLink::send_activation(int64_t stage, int64_t m, const at::Tensor& hidden) {
  auto t = hidden.detach().contiguous();
  sends_.push_back({t, dist::send_async(pp_, t, rank_of(stage + 1), static_cast<int>(tag(false, stage + 1, m)))});
}

void StageLink::post_gradient(int64_t stage, int64_t m, const std::vector<int64_t>& shape,
                              const at::TensorOptions& options) {
  if (!last(stage)) post(tag(true, stage, m), stage + 1, shape, options);
}

at::Tensor StageLink::take_gradient(int64_t stage, int64_t m) {
  return take(tag(true, stage, m), "pipeline gradient", stage, m);
}

void StageLink::send_gradient(int64_t stage, int64_t m, const at::Tensor& grad) {
  auto t = grad.contiguous();
  sends_.push_back({t, dist::send_async(pp_, t, rank_of(stage - 1), static_cast<int>(tag(true, stage - 1, m)))});
}

void StageLink::finish() {
  for (auto& s : sends_) dist::wait_work(pp_, s.work, "pipeline send");
  sends_.clear();
}

}  // namespace meshtrain::parallel

#include "parallel/pipeline_stage.h"

#include <numeric>

#include "dist/collectives.h"
#include "dist/device_mesh.h"
#include "parallel/parallel_options.h"
#include "util/check.h"

namespace meshtrain::parallel {

std::vector<StageLayers> split_stages(int64_t layers, int64_t stages, const std::vector<int64_t>& layers_per_stage) {
  if (stages > layers)
    throw UsageError(str_cat("pp_size ", stages, " asks for more pipeline stages than the model's ", layers,
                             " decoder layers"));
  std::vector<int64_t> counts = layers_per_stage;
  if (counts.empty()) {
    if (layers % stages != 0)
      throw UsageError(str_cat("pp_size ", stages, " does not divide the model's ", layers,
                               " decoder layers evenly; give --pp_layers_per_stage"));
    counts.assign(static_cast<size_t>(stages), layers / stages);
  }
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  const bool positive = std::all_of(counts.begin(), counts.end(), [](int64_t n) { return n >= 1; });
  if (static_cast<int64_t>(counts.size()) != stages || total != layers || !positive)
    throw UsageError(str_cat("--pp_layers_per_stage gives ", counts.size(), " stage(s) of ", total,
                             " layers in all; pp_size ", stages, " needs ", stages,
                             " counts of at least 1 summing to the model's ", layers, " decoder layers"));
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
  const int64_t stages = mesh.size(MeshDim::Pp);
  if (stages == 1) return;
  const auto& c = model.config();
  const int64_t stage = mesh.coordinate(MeshDim::Pp);
  const auto split = split_stages(c.num_hidden_layers, stages, options.layers_per_stage);
  const bool first = stage == 0, last = stage == stages - 1;
  model.keep_slice(split[stage].begin, split[stage].end, first, last);
  // A tied embedding is the input of the first stage and the head of the last: one weight held
  // twice, its two gradients summed over the pair so that the copies stay equal.
  if (c.tie_word_embeddings && (first || last)) {
    auto& place = model.placement("model.embed_tokens.weight");
    place.mesh_dims.push_back(MeshDim::PpEnds);
    place.placements.push_back(nn::Placement::replicate());
  }
}

StageLink::StageLink(dist::Group& pp) : pp_(pp) {}

StageLink::~StageLink() = default;

bool StageLink::first() const { return pp_.rank() == 0; }
bool StageLink::last() const { return pp_.rank() == pp_.size() - 1; }

namespace {
int64_t activation_tag(int64_t m) { return 2 * m; }
int64_t gradient_tag(int64_t m) { return 2 * m + 1; }
}  // namespace

void StageLink::post(int64_t tag, int src, const std::vector<int64_t>& shape, const at::TensorOptions& options) {
  if (recvs_.count(tag)) return;
  Pending p{at::empty(shape, options), {}};
  p.work = dist::recv_async(pp_, p.buffer, src, static_cast<int>(tag));
  recvs_.emplace(tag, std::move(p));
}

at::Tensor StageLink::take(std::map<int64_t, Pending>& from, int64_t tag, const char* what) {
  auto it = from.find(tag);
  MT_CHECK(it != from.end(), "pipeline stage ", pp_.rank(), ": no receive posted for the ", what, " of micro-batch ",
           tag / 2);
  dist::wait_work(pp_, it->second.work, what);
  auto t = it->second.buffer;
  from.erase(it);
  return t;
}

void StageLink::post_activation(int64_t m, const std::vector<int64_t>& shape, const at::TensorOptions& options) {
  if (!first()) post(activation_tag(m), pp_.rank() - 1, shape, options);
}

at::Tensor StageLink::take_activation(int64_t m) { return take(recvs_, activation_tag(m), "pipeline activation"); }

void StageLink::send_activation(int64_t m, const at::Tensor& hidden) {
  auto t = hidden.detach().contiguous();
  sends_.push_back({t, dist::send_async(pp_, t, pp_.rank() + 1, static_cast<int>(activation_tag(m)))});
}

void StageLink::post_gradient(int64_t m, const std::vector<int64_t>& shape, const at::TensorOptions& options) {
  if (!last()) post(gradient_tag(m), pp_.rank() + 1, shape, options);
}

at::Tensor StageLink::take_gradient(int64_t m) { return take(recvs_, gradient_tag(m), "pipeline gradient"); }

void StageLink::send_gradient(int64_t m, const at::Tensor& grad) {
  auto t = grad.contiguous();
  sends_.push_back({t, dist::send_async(pp_, t, pp_.rank() - 1, static_cast<int>(gradient_tag(m)))});
}

void StageLink::finish() {
  for (auto& s : sends_) dist::wait_work(pp_, s.work, "pipeline send");
  sends_.clear();
}

}  // namespace meshtrain::parallel

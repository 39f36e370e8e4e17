// Pipeline stages: contiguous slices of the decoder layers (the first stage also the embedding, the
// last the final norm and the head); a pp rank holds one, or virtual_stages of them (stages r,
// r + P, ...), cut from the serial model with its names, placement records and initial values;
// and the point-to-point link between neighbouring stages (activations forward, gradients back).
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "models/llama.h"

namespace meshtrain::dist {
class DeviceMesh;
class Group;
}  // namespace meshtrain::dist

namespace meshtrain::parallel {

struct PipelineOptions;

struct StageLayers {
  int64_t begin = 0, end = 0;  // decoder layers [begin, end)
};

// The layers of each of the ranks · virtual_stages stages: layers_per_stage when given (one count
// per stage, each >= 1, summing to `layers`), else an even split. A UsageError with the numbers
// when there are more stages than layers, the even split does not divide, or the counts do not fit.
std::vector<StageLayers> split_stages(int64_t layers, int64_t ranks, const std::vector<int64_t>& layers_per_stage,
                                      int64_t virtual_stages = 1);
// "N" (every stage N layers) or "N1,N2,..." (one count per stage).
std::vector<int64_t> parse_layers_per_stage(const std::string& text, int64_t stages);

// Cuts the model to this rank's stages (of its pp coordinate) and, for tied embeddings, marks the
// embedding weight held by the first and the last stage as replicated over pp_ends (its gradient
// summed there, saved by the first). No-op when pp_size is 1.
void apply_pipeline_stage(models::LlamaForCausalLM& model, const dist::DeviceMesh& mesh,
                          const PipelineOptions& options);

// Point-to-point between neighbouring stages on the pp group, stage s on rank s mod pp_size. Each
// message has one tag per (direction, receiving stage, micro-batch), so receives can be posted
// ahead in any order; shapes are known to both sides, never exchanged. Sends are non-blocking; the
// tensors stay alive until finish().
class StageLink {
 public:
  StageLink(dist::Group& pp, int64_t stages);
  ~StageLink();
  bool first(int64_t stage) const { return stage == 0; }
  bool last(int64_t stage) const { return stage == stages_ - 1; }

  // The activation micro-batch m enters `stage` with (from the previous stage).
  void post_activation(int64_t stage, int64_t m, const std::vector<int64_t>& shape, const at::TensorOptions& options);
  at::Tensor take_activation(int64_t stage, int64_t m);
  void send_activation(int64_t stage, int64_t m, const at::Tensor& hidden);
  // The gradient of `stage`'s output for micro-batch m (from the next stage).
  void post_gradient(int64_t stage, int64_t m, const std::vector<int64_t>& shape, const at::TensorOptions& options);
  at::Tensor take_gradient(int64_t stage, int64_t m);
  void send_gradient(int64_t stage, int64_t m, const at::Tensor& grad);
  // Waits for every send started.
  void finish();

 private:
  struct Pending {
    at::Tensor buffer;
    c10::intrusive_ptr<c10d::Work> work;
  };
  int64_t tag(bool gradient, int64_t stage, int64_t m) const { return 2 * (m * stages_ + stage) + gradient; }
  int rank_of(int64_t stage) const;
  at::Tensor take(int64_t tag, const char* what, int64_t stage, int64_t m);
  void post(int64_t tag, int64_t src_stage, const std::vector<int64_t>& shape, const at::TensorOptions& options);
  dist::Group& pp_;
  int64_t stages_;
  std::map<int64_t, Pending> recvs_;
  std::vector<Pending> sends_;
};

}  // namespace meshtrain::parallel

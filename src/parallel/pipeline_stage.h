// A pipeline stage: the contiguous slice of the decoder layers one pp rank holds (the first stage
// also the embedding, the last the final norm and the head), cut from the serial model with its
// names, placement records and initial values; and the stage's point-to-point link to its
// neighbours on the pp group (activations forward, their gradients back).
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

// The layers of each of `stages` stages: layers_per_stage when given (one count per stage, each
// >= 1, summing to `layers`), else an even split. A UsageError with the numbers when there are
// more stages than layers, the even split does not divide, or the counts do not fit.
std::vector<StageLayers> split_stages(int64_t layers, int64_t stages, const std::vector<int64_t>& layers_per_stage);
// "N" (every stage N layers) or "N1,N2,..." (one count per stage).
std::vector<int64_t> parse_layers_per_stage(const std::string& text, int64_t stages);

// Cuts the model to this rank's stage (its pp coordinate) and, for tied embeddings, marks the
// embedding weight held by the first and the last stage as replicated over pp_ends (its gradient
// summed there, saved by the first). No-op when pp_size is 1.
void apply_pipeline_stage(models::LlamaForCausalLM& model, const dist::DeviceMesh& mesh,
                          const PipelineOptions& options);

// Point-to-point between neighbouring stages on the pp group. Each message has one tag per
// (direction, micro-batch), so receives can be posted ahead in any order; shapes are known to
// both sides, never exchanged. Sends are non-blocking; the tensors stay alive until finish().
class StageLink {
 public:
  explicit StageLink(dist::Group& pp);
  ~StageLink();
  bool first() const;
  bool last() const;

  // The activation micro-batch m enters this stage with (from the previous stage).
  void post_activation(int64_t m, const std::vector<int64_t>& shape, const at::TensorOptions& options);
  at::Tensor take_activation(int64_t m);
  void send_activation(int64_t m, const at::Tensor& hidden);
  // The gradient of this stage's output for micro-batch m (from the next stage).
  void post_gradient(int64_t m, const std::vector<int64_t>& shape, const at::TensorOptions& options);
  at::Tensor take_gradient(int64_t m);
  void send_gradient(int64_t m, const at::Tensor& grad);
  // Waits for every send started.
  void finish();

 private:
  struct Pending {
    at::Tensor buffer;
    c10::intrusive_ptr<c10d::Work> work;
  };
  at::Tensor take(std::map<int64_t, Pending>& from, int64_t tag, const char* what);
  void post(int64_t tag, int src, const std::vector<int64_t>& shape, const at::TensorOptions& options);
  dist::Group& pp_;
  std::map<int64_t, Pending> recvs_;
  std::vector<Pending> sends_;
};

}  // namespace meshtrain::parallel

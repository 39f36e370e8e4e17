#include "parallel/pipeline_runner.h"

#include <torch/csrc/autograd/autograd.h>

#include "dist/device_mesh.h"
#include "nn/causal_lm_loss.h"
#include "parallel/parallelize.h"
#include "parallel/pipeline_routing.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/pipeline_stage.h"
#include "parallel/pipeline_timeline.h"

namespace meshtrain::parallel {

namespace {

// What one micro-batch leaves on this stage between its forward and its backward.
struct InFlight {
  at::Tensor input;   // the activation received (a leaf whose gradient goes back), or undefined
  at::Tensor output;  // hidden states sent on, or on the last stage the scaled loss
};

}  // namespace

StepLoss pipeline_step_loss(ParallelModel& model, const std::vector<MicroBatch>& micro_batches, Pass pass,
                            PipelineTimeline* timeline) {
  using Kind = PipelineAction::Kind;
  const auto& mesh = model.mesh();
  StepLoss step;
  step.targets = global_target_count(mesh, micro_batches);
  const double denominator = static_cast<double>(std::max<int64_t>(step.targets, 1));

  const bool backward = pass == Pass::ForwardBackward;
  const auto count = static_cast<int64_t>(micro_batches.size());
  const int64_t stages = mesh.size(MeshDim::Pp);
  if (backward) check_pipeline_micro_batches(stages, count);
  const auto actions = backward ? pipeline_actions(model.pipeline().schedule, mesh.coordinate(MeshDim::Pp), stages, count)
                                : forward_actions(count);
  StageLink link(mesh.group(MeshDim::Pp));
  PipelineRouting routing(model, count);
  // Received into buffers on the pp group's device, computed on the model's.
  const auto options = at::TensorOptions().dtype(at::kFloat).device(mesh.group(MeshDim::Pp).device());
  auto post = [&](const PipelineAction& a) {
    const auto shape = model.stage_activation_shape(micro_batches[a.micro_batch].input_ids);
    if (a.kind == Kind::Forward) link.post_activation(a.micro_batch, shape, options);
    else link.post_gradient(a.micro_batch, shape, options);
  };
  std::vector<InFlight> flight(micro_batches.size());
  for (size_t k = 0; k < actions.size(); ++k) {
    const auto& a = actions[k];
    post(a);
    if (k + 1 < actions.size()) post(actions[k + 1]);  // its transfer overlaps this action
    const int64_t m = a.micro_batch;
    auto& f = flight[m];
    using Span = PipelineTimeline::Span;
    PipelineTimeline::Scope action(timeline, a.kind == Kind::Forward ? Span::Forward : Span::Backward);
    if (a.kind == Kind::Forward) {
      if (!link.first()) {
        PipelineTimeline::Scope wait(timeline, Span::Wait);
        f.input = link.take_activation(m).to(model.device());
        if (backward) f.input.requires_grad_(true);
      }
      models::Routing records;
      auto out = model.stage_forward(micro_batches[m].input_ids, f.input, micro_batches[m].position_ids, &records);
      if (link.last()) {
        auto sum = model.logits_loss_sum(out, micro_batches[m].targets);
        step.loss_sum += sum.item<double>();
        if (backward) f.output = sum / denominator;
      } else {
        link.send_activation(m, out);
        if (backward) f.output = out;
      }
      routing.forward_done(m, records);
      if (!backward) f = InFlight{};
      continue;
    }
    model.prepare_backward(m + 1 == count);  // backwards run in micro-batch order
    at::Tensor grad;  // of the output; the last stage's output is the loss
    if (!link.last()) {
      PipelineTimeline::Scope wait(timeline, Span::Wait);
      grad = link.take_gradient(m).to(model.device());
    }
    std::vector<at::Tensor> roots{f.output}, grads{grad};
    if (auto aux = routing.aux_term(m); aux.defined()) {  // this stage's routers' share of the aux loss
      roots.push_back(aux);
      grads.emplace_back();
    }
    torch::autograd::backward(roots, grads);
    if (!link.first()) link.send_gradient(m, f.input.grad());
    f = InFlight{};
  }
  link.finish();
  if (backward) model.finish_backward();
  step.moe = routing.finish();
  // The loss lives on the last stage's ranks: summed over those holding different tokens, then
  // over the stages (the others add zero); each stage adds its own MoE layers' routing.
  sum_step_loss(mesh.group(MeshDim::DpCpSp), step);
  sum_step_loss(mesh.group(MeshDim::Pp), step);
  return step;
}

}  // namespace meshtrain::parallel

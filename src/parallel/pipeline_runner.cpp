#include "parallel/pipeline_runner.h"

#include <torch/csrc/autograd/autograd.h>

#include <map>

#include "dist/device_mesh.h"
#include "nn/causal_lm_loss.h"
#include "parallel/parallelize.h"
#include "parallel/pipeline_routing.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/pipeline_stage.h"
#include "parallel/pipeline_timeline.h"

namespace meshtrain::parallel {

namespace {

// What one micro-batch leaves on one stage between its forward and its (weight) backward.
struct InFlight {
  at::Tensor input;        // the activation received (a leaf whose gradient goes back), or undefined
  at::Tensor output;       // hidden states sent on, or on the last stage the scaled loss
  at::Tensor grad_output;  // the gradient received for output, kept for the weight backward
};

// Backward in two: the input's gradient now (sent on at once), the graph kept for the weights'.
// The engine computes only what the input's gradient needs (no weight gradients), but the weight
// backward walks the whole graph again, the activations' gradients included (docs/parallelism.md).
at::Tensor backward_input(InFlight& f) {
  if (!f.input.defined()) return {};  // the first stage: all its gradients are the weights'
  std::vector<at::Tensor> grad_outputs;
  if (f.grad_output.defined()) grad_outputs.push_back(f.grad_output);
  return torch::autograd::grad({f.output}, {f.input}, grad_outputs, /*retain_graph=*/true)[0];
}

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
  const auto& options = model.pipeline();
  const int64_t ranks = mesh.size(MeshDim::Pp), rank = mesh.coordinate(MeshDim::Pp);
  if (backward) check_pipeline_micro_batches(options.schedule, ranks, count);
  const auto actions = backward ? pipeline_actions(options.schedule, rank, ranks, count, options.virtual_stages)
                                : forward_actions(rank, ranks, count, options.virtual_stages);
  // DDP's hooks sync during the step's last backward when that touches every parameter once:
  // with one stage per rank and whole backwards. Otherwise the buckets go after the last action.
  const bool sync_in_last_backward = options.virtual_stages == 1 && !splits_backward(options.schedule);
  StageLink link(mesh.group(MeshDim::Pp), model.pipeline_stages());
  // MoE runs one stage per rank with whole backwards (apply_pipeline_stage refuses the rest), so
  // its routing goes by micro-batch.
  PipelineRouting routing(model, count);
  // Received into buffers on the pp group's device, computed on the model's.
  const auto float_options = at::TensorOptions().dtype(at::kFloat).device(mesh.group(MeshDim::Pp).device());
  auto post = [&](const PipelineAction& a) {
    const auto shape = model.stage_activation_shape(micro_batches[a.micro_batch].input_ids);
    if (a.kind == Kind::Forward) link.post_activation(a.stage, a.micro_batch, shape, float_options);
    else if (a.kind != Kind::BackwardWeight) link.post_gradient(a.stage, a.micro_batch, shape, float_options);
  };
  std::map<std::pair<int64_t, int64_t>, InFlight> flight;  // by (stage, micro-batch)
  for (size_t k = 0; k < actions.size(); ++k) {
    const auto& a = actions[k];
    post(a);
    if (k + 1 < actions.size()) post(actions[k + 1]);  // its transfer overlaps this action
    const int64_t m = a.micro_batch, stage = a.stage;
    auto& f = flight[{stage, m}];
    using Span = PipelineTimeline::Span;
    PipelineTimeline::Scope action(timeline, a.kind == Kind::Forward ? Span::Forward : Span::Backward);
    if (a.kind == Kind::Forward) {
      if (!link.first(stage)) {
        PipelineTimeline::Scope wait(timeline, Span::Wait);
        f.input = link.take_activation(stage, m).to(model.device());
        if (backward) f.input.requires_grad_(true);
      }
      models::Routing records;
      auto out = model.stage_forward(stage, micro_batches[m].input_ids, f.input, micro_batches[m].position_ids, &records);
      if (link.last(stage)) {
        auto sum = model.logits_loss_sum(out, micro_batches[m].targets);
        step.loss_sum += sum.item<double>();
        if (backward) f.output = sum / denominator;
      } else {
        link.send_activation(stage, m, out);
        if (backward) f.output = out;
      }
      routing.forward_done(m, records);
      if (!backward) flight.erase(std::make_pair(stage, m));
      continue;
    }
    if (a.kind != Kind::BackwardWeight && !link.last(stage)) {
      PipelineTimeline::Scope wait(timeline, Span::Wait);
      f.grad_output = link.take_gradient(stage, m).to(model.device());
    }
    if (a.kind == Kind::BackwardInput) {
      if (!link.first(stage)) link.send_gradient(stage, m, backward_input(f));
      continue;
    }
    model.prepare_backward(sync_in_last_backward && m + 1 == count);  // backwards in micro-batch order
    std::vector<at::Tensor> roots{f.output}, grads{f.grad_output};
    if (auto aux = routing.aux_term(m); aux.defined()) {  // this stage's routers' share of the aux loss
      roots.push_back(aux);
      grads.emplace_back();
    }
    torch::autograd::backward(roots, grads);
    if (a.kind == Kind::Backward && !link.first(stage)) link.send_gradient(stage, m, f.input.grad());
    flight.erase(std::make_pair(stage, m));
  }
  link.finish();
  if (backward) {
    if (!sync_in_last_backward) model.prepare_backward(true);  // finish_backward launches every bucket
    model.finish_backward();
  }
  step.moe = routing.finish();
  // The loss lives on the last stage's ranks: summed over those holding different tokens, then
  // over the stages (the others add zero); each stage adds its own MoE layers' routing.
  sum_step_loss(mesh.group(MeshDim::DpCpSp), step);
  sum_step_loss(mesh.group(MeshDim::Pp), step);
  return step;
}

}  // namespace meshtrain::parallel

#include "parallel/activation_checkpointing.h"

#include <torch/csrc/autograd/custom_function.h>

#include "parallel/mixed_precision.h"
#include "util/check.h"

namespace meshtrain::parallel {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What backward needs to run the layer again, and the routing counts of the forward.
struct Recompute : torch::CustomClassHolder {
  nn::LayerForward layer;
  std::optional<nn::RouterRecord> router;
  bool bf16 = false;  // the forward ran under the bf16 autocast guard: so does the recomputation
};

// forward: the layer without autograd, keeping only its input / backward: the layer again with
// autograd from that input, then its backward (reentrant), which accumulates the parameters'
// gradients. The router logits are an output too, so the aux loss reaches the router.
struct CheckpointedLayer : torch::autograd::Function<CheckpointedLayer> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& hidden, c10::intrusive_ptr<Recompute> state) {
    nn::LayerOutput out;
    state->bf16 = autocast_bf16_enabled();
    {
      at::NoGradGuard no_grad;
      out = state->layer(hidden);
    }
    ctx->save_for_backward({hidden});
    variable_list outputs = {out.hidden};
    if (out.router) outputs.push_back(out.router->router_logits);
    state->router = std::move(out.router);
    ctx->saved_data["state"] = c10::IValue::make_capsule(state);
    return outputs;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto state = c10::static_intrusive_pointer_cast<Recompute>(ctx->saved_data["state"].toCapsule());
    auto input = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    nn::LayerOutput out;
    {
      at::AutoGradMode enable_grad(true);
      AutocastGuard autocast(state->bf16);
      out = state->layer(input);
    }
    variable_list outputs, output_grads;
    if (grads[0].defined()) {
      outputs.push_back(out.hidden);
      output_grads.push_back(grads[0]);
    }
    if (grads.size() > 1 && grads[1].defined()) {
      outputs.push_back(out.router->router_logits);
      output_grads.push_back(grads[1]);
    }
    if (!outputs.empty()) torch::autograd::backward(outputs, output_grads);
    return {input.grad(), at::Tensor()};
  }
};

class CheckpointRunner : public nn::LayerRunner {
 public:
  explicit CheckpointRunner(int64_t every) : every_(every) {}

  nn::LayerOutput run(int64_t index, const nn::LayerForward& inner, const at::Tensor& hidden) override {
    if (!at::GradMode::is_enabled() || index % every_ != 0) return inner(hidden);
    auto state = c10::make_intrusive<Recompute>();
    state->layer = inner;
    auto outputs = CheckpointedLayer::apply(hidden, state);
    nn::LayerOutput out{outputs[0], state->router};
    if (out.router) out.router->router_logits = outputs[1];  // in the graph, through the checkpoint
    return out;
  }

 private:
  int64_t every_;
};

}  // namespace

void apply_activation_checkpointing(models::LlamaForCausalLM& model, int64_t every) {
  MT_CHECK(every >= 1, "--ac_every must be at least 1, got ", every);
  model.model->runners.wrap(std::make_shared<CheckpointRunner>(every));
}

}  // namespace meshtrain::parallel

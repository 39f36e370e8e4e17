// AdamW as torch.optim.AdamW computes it (decoupled weight decay, bias correction), run by
// ATen's fused kernel. Norm weights and biases get no weight decay, as HF's Trainer groups
// them. State (exp_avg, exp_avg_sq, step) is keyed by parameter name for checkpoints.
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

namespace meshtrain::train {

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

// HF's rule: no decay for biases and for the weights of normalisation layers.
bool decays(const std::string& param_name);

class AdamW {
 public:
  AdamW(const std::vector<std::pair<std::string, at::Tensor>>& named_params, AdamWOptions options);

  // One update with learning rate lr for every parameter that has a gradient.
  void step(double lr);
  void zero_grad();
  int64_t steps_taken() const { return steps_taken_; }

  // name.exp_avg, name.exp_avg_sq for each parameter, plus "step".
  std::vector<std::pair<std::string, at::Tensor>> state_tensors() const;
  // get(name) returns the saved tensor of that name; shapes must agree.
  template <typename Get>
  void load_state_tensors(Get&& get);

 private:
  struct Group {
    double weight_decay;
    std::vector<std::string> names;
    std::vector<at::Tensor> params, exp_avg, exp_avg_sq, steps;
  };
  std::vector<Group> groups_;
  AdamWOptions options_;
  int64_t steps_taken_ = 0;
};

template <typename Get>
void AdamW::load_state_tensors(Get&& get) {
  at::NoGradGuard no_grad;
  steps_taken_ = get(std::string("step")).template item<int64_t>();
  for (auto& g : groups_)
    for (size_t i = 0; i < g.names.size(); ++i) {
      for (auto [suffix, dst] : {std::pair{".exp_avg", &g.exp_avg[i]}, {".exp_avg_sq", &g.exp_avg_sq[i]}}) {
        at::Tensor src = get(g.names[i] + suffix);
        if (src.sizes() != dst->sizes())
          throw std::runtime_error("optimizer state " + g.names[i] + suffix + " has shape " +
                                   c10::str(src.sizes()) + ", expected " + c10::str(dst->sizes()));
        dst->copy_(src);
      }
      g.steps[i].fill_(static_cast<double>(steps_taken_));
    }
}

}  // namespace meshtrain::train

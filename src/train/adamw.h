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

  // name.exp_avg, name.exp_avg_sq for each parameter: the live tensors, so a checkpoint can
  // load into them in place.
  std::vector<std::pair<std::string, at::Tensor>> state_tensors() const;
  void set_steps_taken(int64_t steps);

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

}  // namespace meshtrain::train

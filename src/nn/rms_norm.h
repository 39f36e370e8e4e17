// RMSNorm as Hugging Face computes it: statistics in fp32, the normalised activations cast
// back to the input dtype, then multiplied by the weight.
#pragma once
#include <torch/nn/module.h>

namespace meshtrain::nn {

class RMSNorm : public torch::nn::Module {
 public:
  RMSNorm(int64_t dim, double eps);
  at::Tensor forward(const at::Tensor& x);  // [..., D] -> [..., D]

  at::Tensor weight;

 private:
  double eps_;
};

}  // namespace meshtrain::nn

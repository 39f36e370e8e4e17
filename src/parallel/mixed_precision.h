// Mixed precision as HF Trainer's --bf16 gives it through torch.autocast: parameters, gradients
// and optimizer state stay fp32; inside the guard matmuls (and attention, nn/attention.cpp) run in
// bf16, while RMSNorm, softmax, RoPE tables and the loss stay fp32, as the reference model
// computes them under autocast. Activation checkpointing records whether the guard was on and
// recomputes the same way.
#pragma once
#include <ATen/autocast_mode.h>

namespace meshtrain::parallel {

class AutocastGuard {
 public:
  explicit AutocastGuard(bool bf16);  // false: leaves the state as it is
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool active_;
  bool was_enabled_[2] = {false, false};  // CPU, CUDA
  at::ScalarType was_dtype_[2] = {at::kBFloat16, at::kBFloat16};
};

// Whether this thread computes under a bf16 autocast guard now.
bool autocast_bf16_enabled();

}  // namespace meshtrain::parallel

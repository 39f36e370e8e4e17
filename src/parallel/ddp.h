// DDP: bucketed gradient all-reduces over the group the sync plan names, started by gradient
// hooks during the last micro-batch's backward and finished before the optimizer step.
#pragma once
#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dist/group.h"

namespace meshtrain::parallel {

class DdpReducer {
 public:
  // Gradients are summed in reduce_dtype (fp32 or bf16) and land in the fp32 .grad.
  DdpReducer(const std::vector<std::pair<std::string, at::Tensor>>& named_params, dist::Group& group,
             double bucket_cap_mb, at::ScalarType reduce_dtype = at::kFloat);
  ~DdpReducer();
  DdpReducer(const DdpReducer&) = delete;
  DdpReducer& operator=(const DdpReducer&) = delete;

  // Whether the coming backward is the last of the step (earlier micro-batches only accumulate).
  void prepare_backward(bool last_micro_batch);
  // Waits for all buckets (launching any whose gradients never arrived) and unflattens them.
  void finish();

  size_t num_buckets() const { return buckets_.size(); }
  double exposed_wait_seconds() const { return exposed_wait_s_; }  // time finish() spent waiting

  void on_grad_ready(size_t param_index);  // called by the gradient hooks

 private:
  struct Bucket {
    std::vector<size_t> params;
    int64_t numel = 0;
    size_t ready = 0;
    at::Tensor buffer;
    c10::intrusive_ptr<c10d::Work> work;
    bool launched = false;
  };
  void launch(Bucket& b);

  std::vector<at::Tensor> params_;
  std::vector<size_t> bucket_of_;
  std::vector<Bucket> buckets_;
  dist::Group& group_;
  at::ScalarType reduce_dtype_;
  bool syncing_ = false;
  double exposed_wait_s_ = 0.0;
};

}  // namespace meshtrain::parallel

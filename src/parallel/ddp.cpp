#include "parallel/ddp.h"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <chrono>

#include "dist/collectives.h"
#include "util/check.h"

namespace meshtrain::parallel {

namespace {

struct GradReadyHook : torch::autograd::PostAccumulateGradHook {
  GradReadyHook(DdpReducer* reducer, size_t index) : reducer_(reducer), index_(index) {}
  void operator()(const torch::autograd::Variable&) override { reducer_->on_grad_ready(index_); }
  DdpReducer* reducer_;
  size_t index_;
};

}  // namespace

DdpReducer::DdpReducer(const std::vector<std::pair<std::string, at::Tensor>>& named_params, dist::Group& group,
                       double bucket_cap_mb, at::ScalarType reduce_dtype)
    : group_(group), reduce_dtype_(reduce_dtype) {
  MT_CHECK(bucket_cap_mb > 0, "--ddp_bucket_cap_mb must be positive, got ", bucket_cap_mb);
  const auto cap = static_cast<int64_t>(bucket_cap_mb * 1024 * 1024);
  for (auto& [name, p] : named_params) params_.push_back(p);
  bucket_of_.resize(params_.size());
  // Gradients arrive roughly in reverse registration order: bucket from the last parameter back.
  for (size_t k = params_.size(); k-- > 0;) {
    const int64_t bytes = params_[k].numel() * params_[k].element_size();
    if (buckets_.empty() || (buckets_.back().numel * params_[k].element_size() + bytes > cap && buckets_.back().numel > 0))
      buckets_.emplace_back();
    buckets_.back().params.push_back(k);
    buckets_.back().numel += params_[k].numel();
    bucket_of_[k] = buckets_.size() - 1;
  }
  if (group_.size() == 1) return;
  for (size_t k = 0; k < params_.size(); ++k)
    torch::autograd::impl::set_post_acc_grad_hooks(params_[k], std::make_unique<GradReadyHook>(this, k));
}

DdpReducer::~DdpReducer() {
  if (group_.size() == 1) return;
  for (auto& p : params_) torch::autograd::impl::set_post_acc_grad_hooks(p, nullptr);
}

void DdpReducer::prepare_backward(bool last_micro_batch) {
  syncing_ = last_micro_batch && group_.size() > 1;
  for (auto& b : buckets_) {
    b.ready = 0;
    b.launched = false;
    b.work.reset();
  }
}

void DdpReducer::on_grad_ready(size_t index) {
  if (!syncing_) return;
  auto& b = buckets_[bucket_of_[index]];
  if (++b.ready == b.params.size()) launch(b);
}

void DdpReducer::launch(Bucket& b) {
  std::vector<at::Tensor> flat;
  for (size_t k : b.params) {
    auto& g = params_[k].grad();
    flat.push_back(g.defined() ? g.reshape({-1}) : at::zeros({params_[k].numel()}, params_[k].options()));
  }
  b.buffer = at::cat(flat).to(reduce_dtype_);
  b.work = dist::all_reduce_async(group_, b.buffer);
  b.launched = true;
}

void DdpReducer::finish() {
  if (!syncing_) return;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto& b : buckets_) {
    if (!b.launched) launch(b);  // some parameter got no gradient this step
    dist::wait_work(group_, b.work, "DDP gradient all_reduce");
  }
  exposed_wait_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  at::NoGradGuard no_grad;
  for (auto& b : buckets_) {
    int64_t offset = 0;
    for (size_t k : b.params) {
      auto& p = params_[k];
      auto slice = b.buffer.narrow(0, offset, p.numel()).view(p.sizes());
      if (p.grad().defined()) p.mutable_grad().copy_(slice);
      else p.mutable_grad() = at::empty_like(p).copy_(slice);
      offset += p.numel();
    }
  }
  syncing_ = false;
}

}  // namespace meshtrain::parallel

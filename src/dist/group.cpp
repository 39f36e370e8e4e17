#include "dist/group.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#ifdef MESHTRAIN_CUDA
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>

#include "dist/network.h"
#include "util/check.h"

namespace meshtrain::dist {

Group::Group(MeshDim dim, std::vector<int> ranks, int global_rank) : dim_(dim), ranks_(std::move(ranks)) {
  auto it = std::find(ranks_.begin(), ranks_.end(), global_rank);
  MT_CHECK(it != ranks_.end(), "rank ", global_rank, " is not a member of group ", name());
  index_ = static_cast<int>(it - ranks_.begin());
}

Group::Group(MeshDim dim, std::vector<int> ranks, int global_rank, const c10::intrusive_ptr<c10d::Store>& store,
             std::chrono::milliseconds timeout, const std::string& master_addr, Backend backend)
    : Group(dim, std::move(ranks), global_rank) {
  timeout_ = timeout;
  if (ranks_.size() <= 1) return;
  std::string key = name();
  for (int r : ranks_) key.append("_").append(std::to_string(r));
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>(key, store);
  stall_store_ = c10::make_intrusive<c10d::PrefixStore>("stall/" + key, store);
  try {
    if (backend == Backend::Nccl) {
#ifdef MESHTRAIN_CUDA
      device_ = c10::impl::getDeviceGuardImpl(c10::kCUDA)->getDevice();
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = timeout;
      backend_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, index_, size(), options);
#else
      fail("rank ", global_rank, ": group ", name(), ": this build has no NCCL");
#endif
    } else {
      auto options = c10d::ProcessGroupGloo::Options::create(timeout);
      options->devices = gloo_devices(master_addr);
      backend_ = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, index_, size(), options);
    }
  } catch (const std::exception& e) {
    fail("rank ", global_rank, ": creating group ", name(), " failed: ", e.what());
  }
}

std::shared_ptr<Group> Group::solo(MeshDim dim, int global_rank) {
  return std::shared_ptr<Group>(new Group(dim, {global_rank}, global_rank));
}

std::shared_ptr<Group> Group::layout_only(MeshDim dim, std::vector<int> ranks, int global_rank) {
  return std::shared_ptr<Group>(new Group(dim, std::move(ranks), global_rank));
}

c10d::Backend& Group::backend() const {
  MT_CHECK(backend_, "group ", name(), " of rank ", global_rank(), " has no backend: a layout-only mesh does not communicate");
  return *backend_;
}

}  // namespace meshtrain::dist

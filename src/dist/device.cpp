#include "dist/device.h"

#include <ATen/Context.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include "util/check.h"

#ifdef MESHTRAIN_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <torch/csrc/distributed/c10d/NCCLUtils.hpp>
#endif

namespace meshtrain::dist {

bool cuda_build() {
#ifdef MESHTRAIN_CUDA
  return at::detail::getCUDAHooks().isBuilt();
#else
  return false;
#endif
}

int cuda_device_count() {
  if (!cuda_build()) return 0;
  try {
    return at::detail::getCUDAHooks().getNumGPUs();
  } catch (const std::exception&) {
    return 0;  // no driver
  }
}

RankDevice choose_device(const std::string& device, const std::string& backend, const RankEnv& env) {
  if (!device.empty() && device != "cpu" && device != "cuda")
    throw UsageError("--device must be cpu or cuda, got '" + device + "'");
  if (!backend.empty() && backend != "gloo" && backend != "nccl")
    throw UsageError("--backend must be gloo or nccl, got '" + backend + "'");
  const int gpus = cuda_device_count();
  if (device == "cuda" && !cuda_build())
    throw UsageError("--device cuda: this meshtrain was built without CUDA (its torch has no libtorch_cuda, or "
                     "the CUDA / NCCL headers were not found beside it)");
  if (device == "cuda" && gpus == 0)
    throw UsageError("--device cuda: no CUDA GPU is visible (no driver, or CUDA_VISIBLE_DEVICES hides them)");
  RankDevice chosen;
  const bool cuda = device == "cuda" || (device.empty() && gpus > 0);
  if (cuda) {
    chosen.device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank % gpus));
    chosen.local_ranks_per_gpu = (env.local_world_size + gpus - 1) / gpus;
  }
  chosen.backend = backend.empty() ? (cuda ? Backend::Nccl : Backend::Gloo)
                                   : backend == "nccl" ? Backend::Nccl : Backend::Gloo;
  if (chosen.backend == Backend::Nccl && !cuda)
    throw UsageError("--backend nccl needs --device cuda: NCCL reduces CUDA tensors only (use gloo on cpu)");
  // NCCL refuses two ranks of one communicator on one GPU.
  if (chosen.backend == Backend::Nccl && chosen.local_ranks_per_gpu > 1)
    throw UsageError(str_cat("--backend nccl: ", env.local_world_size, " local ranks share ", gpus,
                             " GPU(s), and NCCL needs one GPU per rank; use --backend gloo to share them"));
  return chosen;
}

void bind_device(const RankDevice& chosen) {
  if (chosen.device.is_cuda()) c10::impl::getDeviceGuardImpl(c10::kCUDA)->setDevice(chosen.device);
}

std::string describe_cuda() {
#ifdef MESHTRAIN_CUDA
  std::string s = str_cat("CUDA ", CUDA_VERSION / 1000, ".", CUDA_VERSION % 1000 / 10, ", NCCL ", c10d::getNcclVersion(),
                          "\n");
  const int gpus = cuda_device_count();
  if (gpus == 0) return s + "no GPU visible\n";
  for (int i = 0; i < gpus; ++i) {
    const auto* p = at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(i));
    s += str_cat("cuda:", i, " ", p->name, ", ", p->totalGlobalMem >> 20, " MiB, compute capability ", p->major, ".",
                 p->minor, ", ", p->multiProcessorCount, " SMs\n");
  }
  return s;
#else
  return "this build has no CUDA\n";
#endif
}

}  // namespace meshtrain::dist

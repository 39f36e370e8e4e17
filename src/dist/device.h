// The device a rank computes on and the backend its groups talk through, chosen once at the CLI
// edge: --device cpu|cuda (default cuda when this build has CUDA and a GPU is visible) and
// --backend gloo|nccl (default nccl on cuda, gloo on cpu). Under a launcher each rank binds
// cuda:(LOCAL_RANK mod GPUs), so ranks share GPUs when there are fewer GPUs than local ranks.
#pragma once
#include <c10/core/Device.h>

#include <string>

#include "dist/rank_env.h"

namespace meshtrain::dist {

enum class Backend { Gloo, Nccl };

struct RankDevice {
  c10::Device device = c10::kCPU;
  Backend backend = Backend::Gloo;
  int local_ranks_per_gpu = 1;  // > 1: this node's ranks share its GPUs
};

// Whether this build can run on CUDA (compiled with the CUDA and NCCL headers), and the GPUs visible.
bool cuda_build();
int cuda_device_count();

// device: "cpu", "cuda" or "" (the default); backend: "gloo", "nccl" or "" (the default). A
// UsageError with the reason for an unknown name, cuda without a CUDA build or a visible GPU,
// and nccl on cpu (NCCL reduces CUDA tensors only).
RankDevice choose_device(const std::string& device, const std::string& backend, const RankEnv& env);
// Makes the rank's GPU the current CUDA device (nothing on cpu).
void bind_device(const RankDevice& chosen);
// The build's CUDA and NCCL versions and each visible GPU (name, memory), one per line; or why
// there is none.
std::string describe_cuda();

}  // namespace meshtrain::dist

#include "util/gemm_rate.h"

#include <ATen/ATen.h>
#include <ATen/detail/CUDAHooksInterface.h>

#include <algorithm>
#include <chrono>
#include <limits>

namespace meshtrain::util {

double measure_gemm_flops(int n, int repeats, bool bf16, c10::Device device) {
  at::NoGradGuard no_grad;
  const auto options = at::TensorOptions().dtype(bf16 ? at::kBFloat16 : at::kFloat).device(device);
  auto a = at::randn({n, n}, options), b = at::randn({n, n}, options), c = at::empty({n, n}, options);
  // A GPU runs the product asynchronously: wait for it before reading the clock.
  auto sync = [&] {
    if (device.is_cuda()) at::detail::getCUDAHooks().deviceSynchronize(device.index());
  };
  at::mm_out(c, a, b);  // warm-up
  sync();
  double best = std::numeric_limits<double>::max();
  for (int i = 0; i < repeats; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    at::mm_out(c, a, b);
    sync();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return 2.0 * n * n * static_cast<double>(n) / best;
}

}  // namespace meshtrain::util

#include "util/gemm_rate.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <limits>

namespace meshtrain::util {

double measure_gemm_flops(int n, int repeats, bool bf16) {
  at::NoGradGuard no_grad;
  const auto dtype = bf16 ? at::kBFloat16 : at::kFloat;
  auto a = at::randn({n, n}).to(dtype), b = at::randn({n, n}).to(dtype), c = at::empty({n, n}, dtype);
  at::mm_out(c, a, b);  // warm-up
  double best = std::numeric_limits<double>::max();
  for (int i = 0; i < repeats; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    at::mm_out(c, a, b);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return 2.0 * n * n * static_cast<double>(n) / best;
}

}  // namespace meshtrain::util

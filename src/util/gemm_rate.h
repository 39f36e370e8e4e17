// The matrix-multiply rate of this process (an n³ matmul on the intra-op threads it has, or on
// a GPU; fp32 or bf16): the denominator of MFU, measured rather than taken from a datasheet.
#pragma once
#include <c10/core/Device.h>

namespace meshtrain::util {

double measure_gemm_flops(int n = 2048, int repeats = 3, bool bf16 = false, c10::Device device = c10::kCPU);

}  // namespace meshtrain::util

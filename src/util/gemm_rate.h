// The matrix-multiply rate of this process (a 2048³ matmul on the intra-op threads it has, fp32
// or bf16): the denominator of MFU on a CPU, measured rather than taken from a datasheet.
#pragma once

namespace meshtrain::util {

double measure_gemm_flops(int n = 2048, int repeats = 3, bool bf16 = false);

}  // namespace meshtrain::util

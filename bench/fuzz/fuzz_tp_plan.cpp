// A tensor-parallel plan JSON (--tp_plan) from arbitrary bytes.
#include "fuzz_input.h"
#include "parallel/tp_plan.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return meshtrain::fuzz::accept_errors([&] {
    meshtrain::parallel::TpPlan::from_json_file(meshtrain::fuzz::write_input("tp_plan.json", data, size).string());
  });
}

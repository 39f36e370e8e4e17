// An llm.c .bin token file (its 1 KiB header and the tokens it announces) from arbitrary bytes.
#include <algorithm>
#include <vector>

#include "data/token_dataset.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return meshtrain::fuzz::accept_errors([&] {
    auto ds = meshtrain::data::open_token_dataset(meshtrain::fuzz::write_input("tokens.bin", data, size));
    const int64_t n = std::min<int64_t>(ds->size(), 64);
    std::vector<int64_t> out(static_cast<size_t>(n));
    ds->read_into(ds->size() - n, n, out.data());
    ds->check_ids(1 << 20);
  });
}

// The .npy header parser on arbitrary bytes (in memory, as the dataset maps the file).
#include <span>

#include "data/npy_header.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return meshtrain::fuzz::accept_errors([&] {
    meshtrain::data::parse_npy_header(std::span(reinterpret_cast<const std::byte*>(data), size), "input.npy");
  });
}

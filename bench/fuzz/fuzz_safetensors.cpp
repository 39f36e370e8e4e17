// The safetensors header (and every tensor it describes) from arbitrary bytes.
#include "fuzz_input.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return meshtrain::fuzz::accept_errors([&] {
    meshtrain::io::SafetensorsFile file(meshtrain::fuzz::write_input("model.safetensors", data, size));
    for (auto& name : file.names()) {
      auto t = file.read(name);
      if (t.dim() > 0 && t.size(0) > 0) file.read_slice(name, 0, 0, 1);
    }
  });
}

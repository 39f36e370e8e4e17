// A Hugging Face config.json from arbitrary bytes: parsed and validated as `train` does.
#include "fuzz_input.h"
#include "models/llama_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return meshtrain::fuzz::accept_errors([&] {
    auto config = meshtrain::models::LlamaConfig::load(meshtrain::fuzz::write_input("config.json", data, size));
    config.num_parameters();
    config.to_json();
  });
}

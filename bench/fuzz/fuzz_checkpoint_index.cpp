// model.safetensors.index.json from arbitrary bytes, next to one valid two-tensor shard.
#include "fuzz_input.h"
#include "io/hf_checkpoint.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace meshtrain;
  static const bool shard_written = [] {
    io::save_safetensors(fuzz::work_dir() / "model-00001-of-00001.safetensors",
                         {{"a", at::ones({2, 3})}, {"b", at::zeros({4})}});
    return true;
  }();
  (void)shard_written;
  return fuzz::accept_errors([&] {
    fuzz::write_input("model.safetensors.index.json", data, size);
    io::CheckpointReader reader(fuzz::work_dir());
    for (auto& name : reader.names()) reader.read(name);
  });
}

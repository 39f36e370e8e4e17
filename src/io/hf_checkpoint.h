// Hugging Face checkpoint directories: model.safetensors, or shards
// model-0000N-of-0000M.safetensors listed by model.safetensors.index.json. The index may only
// name files inside the directory; every tensor name maps to exactly one file.
#pragma once
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"

namespace meshtrain::io {

class CheckpointReader {
 public:
  explicit CheckpointReader(const std::filesystem::path& dir);

  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;
  at::Tensor read(const std::string& name) const;
  at::Tensor read_slice(const std::string& name, int64_t dim, int64_t start, int64_t length) const;
  uint64_t bytes_read() const;  // summed over the files

 private:
  const SafetensorsFile& file_of(const std::string& name) const;
  std::filesystem::path dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> file_index_;  // tensor name -> files_ index
};

// Writes the tensors in order to dir: one model.safetensors when everything fits in
// max_shard_bytes (0 = no limit), otherwise shards of at most that size (a tensor larger
// than the limit gets a shard of its own) plus model.safetensors.index.json.
// Stale model*.safetensors files of an earlier save in dir are removed.
void save_checkpoint_tensors(const std::filesystem::path& dir,
                             const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                             uint64_t max_shard_bytes = 0);
// The same, with each tensor produced by source just before it is written.
void save_checkpoint_tensors(const std::filesystem::path& dir, const std::vector<TensorSpec>& specs,
                             const TensorSource& source, uint64_t max_shard_bytes = 0);

}  // namespace meshtrain::io

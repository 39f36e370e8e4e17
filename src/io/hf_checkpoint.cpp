// Hugging Face checkpoint directories. The reader opens each shard once and checks that every
// index entry names a file inside the directory that really holds the tensor; the writer
// shards greedily in the given order and then removes shards of an earlier save.
#include "io/hf_checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "util/check.h"
#include "util/files.h"

namespace meshtrain::io {

namespace fs = std::filesystem;

namespace {

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

// True when path lies inside dir (both canonical), compared component by component.
bool is_inside(const fs::path& dir, const fs::path& path) {
  auto [d, p] = std::mismatch(dir.begin(), dir.end(), path.begin(), path.end());
  return d == dir.end() && p != path.end();
}

// The file an index entry names, after checking it is a relative path that stays inside dir,
// also once symlinks are resolved.
fs::path resolve_shard(const fs::path& dir, const fs::path& index, const std::string& file) {
  const fs::path rel(file);
  MT_CHECK(!file.empty(), index, ": empty file name in weight_map");
  MT_CHECK(!rel.is_absolute() && !rel.has_root_name() && !rel.has_root_directory(), index,
           ": weight_map names the absolute path \"", file, "\"; shards must be files in ", dir);
  for (const auto& part : rel)
    MT_CHECK(part != "..", index, ": weight_map file \"", file,
             "\" contains \"..\"; shards must be files in ", dir);
  const fs::path full = dir / rel;
  MT_CHECK(fs::exists(full), index, ": shard file \"", file, "\" does not exist (looked for ",
           full, ")");
  const fs::path real = fs::canonical(full);
  MT_CHECK(is_inside(fs::canonical(dir), real), index, ": shard file \"", file, "\" resolves to ",
           real, ", outside the checkpoint directory ", fs::canonical(dir));
  return full;
}

}  // namespace

CheckpointReader::CheckpointReader(const fs::path& dir) : dir_(dir) {
  MT_CHECK(fs::is_directory(dir), "checkpoint directory ", dir, " does not exist");
  const fs::path index = dir / kIndexFile;
  if (!fs::exists(index)) {
    MT_CHECK(fs::exists(dir / kSingleFile), "no ", kSingleFile, " or ", kIndexFile, " in ", dir);
    files_.push_back(std::make_unique<SafetensorsFile>(dir / kSingleFile));
    for (const auto& name : files_[0]->names()) file_index_[name] = 0;
    return;
  }

  nlohmann::json json;
  try {
    json = nlohmann::json::parse(util::read_file(index));
  } catch (const nlohmann::json::exception& e) {
    fail(index, " is not valid JSON: ", e.what());
  }
  MT_CHECK(json.is_object(), index, " is a JSON ", json.type_name(), ", not an object");
  MT_CHECK(json.contains("weight_map"), index, " has no \"weight_map\"");
  const auto& weight_map = json["weight_map"];
  MT_CHECK(weight_map.is_object(), index, ": weight_map is a JSON ", weight_map.type_name(),
           ", not an object of tensor name -> file");
  if (json.contains("metadata"))
    MT_CHECK(json["metadata"].is_object(), index, ": metadata is a JSON ",
             json["metadata"].type_name(), ", not an object");

  std::map<std::string, size_t> opened;  // file name as written in the index -> files_ index
  for (const auto& [name, file] : weight_map.items()) {
    MT_CHECK(file.is_string(), index, ": weight_map entry \"", name, "\" is ", file.dump(),
             ", not a file name");
    const auto& file_name = file.get_ref<const std::string&>();
    auto it = opened.find(file_name);
    if (it == opened.end()) {
      files_.push_back(std::make_unique<SafetensorsFile>(resolve_shard(dir, index, file_name)));
      it = opened.emplace(file_name, files_.size() - 1).first;
    }
    MT_CHECK(files_[it->second]->contains(name), index, " maps tensor \"", name, "\" to \"",
             file_name, "\", but ", files_[it->second]->path(), " does not contain it");
    file_index_[name] = it->second;
  }
}

std::vector<std::string> CheckpointReader::names() const {
  std::vector<std::string> out;
  out.reserve(file_index_.size());
  for (const auto& [name, i] : file_index_) out.push_back(name);
  return out;
}

bool CheckpointReader::contains(const std::string& name) const {
  return file_index_.count(name) > 0;
}

const SafetensorsFile& CheckpointReader::file_of(const std::string& name) const {
  auto it = file_index_.find(name);
  MT_CHECK(it != file_index_.end(), "no tensor \"", name, "\" in checkpoint ", dir_, " (",
           file_index_.size(), " tensors in ", files_.size(), " files)");
  return *files_[it->second];
}

const TensorInfo& CheckpointReader::info(const std::string& name) const {
  return file_of(name).info(name);
}

at::Tensor CheckpointReader::read(const std::string& name) const { return file_of(name).read(name); }

at::Tensor CheckpointReader::read_slice(const std::string& name, int64_t dim, int64_t start,
                                        int64_t length) const {
  return file_of(name).read_slice(name, dim, start, length);
}

uint64_t CheckpointReader::bytes_read() const {
  uint64_t total = 0;
  for (const auto& f : files_) total += f->bytes_read();
  return total;
}

void save_checkpoint_tensors(const fs::path& dir,
                             const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                             uint64_t max_shard_bytes) {
  save_checkpoint_tensors(dir, specs_of(tensors), [&](size_t i) { return tensors[i].second; }, max_shard_bytes);
}

void save_checkpoint_tensors(const fs::path& dir, const std::vector<TensorSpec>& specs, const TensorSource& source,
                             uint64_t max_shard_bytes) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  MT_CHECK(!ec && fs::is_directory(dir), "cannot create checkpoint directory ", dir, ": ",
           ec ? ec.message() : "a file of that name exists");
  std::set<std::string> seen;
  std::vector<uint64_t> sizes;
  uint64_t total = 0;
  for (const auto& spec : specs) {
    MT_CHECK(seen.insert(spec.name).second, "tensor name \"", spec.name,
             "\" appears twice in the checkpoint save to ", dir);
    uint64_t n = c10::elementSize(spec.dtype);
    for (int64_t d : spec.shape) n *= static_cast<uint64_t>(d);
    sizes.push_back(n);
    total += n;
  }

  std::set<std::string> written;
  if (max_shard_bytes == 0 || total <= max_shard_bytes) {
    save_safetensors(dir / kSingleFile, specs, source);
    written.insert(kSingleFile);
  } else {
    // Greedy, in order: a new shard starts when the next tensor would push this one past the limit.
    std::vector<std::vector<size_t>> shards(1);  // tensor indices per shard
    uint64_t shard_bytes = 0;
    for (size_t i = 0; i < specs.size(); ++i) {
      if (!shards.back().empty() && shard_bytes + sizes[i] > max_shard_bytes) {
        shards.emplace_back();
        shard_bytes = 0;
      }
      shards.back().push_back(i);
      shard_bytes += sizes[i];
    }
    nlohmann::json weight_map = nlohmann::json::object();
    for (size_t s = 0; s < shards.size(); ++s) {
      char file[64];
      std::snprintf(file, sizeof file, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
      std::vector<TensorSpec> shard_specs;
      for (size_t i : shards[s]) shard_specs.push_back(specs[i]);
      save_safetensors(dir / file, shard_specs, [&](size_t k) { return source(shards[s][k]); });
      written.insert(file);
      for (size_t i : shards[s]) weight_map[specs[i].name] = file;
    }
    nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    util::write_file_atomic(dir / kIndexFile, index.dump(2) + "\n");
    written.insert(kIndexFile);
  }

  // Only now that the new checkpoint is complete: drop files of an earlier save.
  static const std::regex shard_name(R"(model-\d+-of-\d+\.safetensors)");
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    const bool ours = name == kSingleFile || name == kIndexFile || std::regex_match(name, shard_name);
    if (ours && !written.count(name)) {
      fs::remove(entry.path(), ec);
      MT_CHECK(!ec, "cannot remove stale checkpoint file ", entry.path(), ": ", ec.message());
    }
  }
  util::sync_path(dir);
}

}  // namespace meshtrain::io

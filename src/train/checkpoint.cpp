#include "train/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cstring>
#include <cstdio>
#include <limits>
#include <map>
#include <regex>

#include "dist/collectives.h"
#include "dist/comm_autograd.h"
#include "dist/device_mesh.h"
#include "io/hf_checkpoint.h"
#include "io/safetensors.h"
#include "models/hf_weights.h"
#include "util/check.h"
#include "util/checksum.h"
#include "util/files.h"
#include "util/json_int.h"

namespace meshtrain::train {

namespace fs = std::filesystem;

namespace {

const std::regex kCheckpointName(R"(checkpoint-(\d+))");
// The manifest entry (not a tensor name) that maps the rank's files to their checksums.
const std::string kFilesKey = "#files";

std::string rank_file(const char* stem, int rank, const char* ext) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s-rank%05d.%s", stem, rank, ext);
  return buf;
}

// A tensor of the model or the optimizer with its block in the global tensor.
struct Block {
  std::string key;
  at::Tensor local;
  const nn::ParamPlacement* place;
};

std::vector<Block> blocks_of(parallel::ParallelModel& model, const AdamW& optimizer) {
  std::vector<Block> blocks;
  auto& m = model.model();
  for (auto& [name, p] : m.named_params()) blocks.push_back({"model." + name, p.detach(), &m.placement(name)});
  for (auto& [key, t] : optimizer.state_tensors()) {
    const auto name = key.substr(0, key.rfind('.'));
    blocks.push_back({"optim." + key, t, &m.placement(name)});
  }
  return blocks;
}

// A block is written by one rank of those holding it: the first of every group its placement
// record replicates it over (or holds it Partial).
bool owns(const dist::DeviceMesh& mesh, const nn::ParamPlacement& place) {
  for (size_t d = 0; d < place.mesh_dims.size(); ++d)
    if (place.placements[d].kind != nn::Placement::Kind::Shard && mesh.group(place.mesh_dims[d]).rank() != 0)
      return false;
  return true;
}

// A packed dim gathered rank-major ([G0 U0 | G1 U1 | ...]) back to block-major ([G0 G1 ... | U0 U1 ...]).
at::Tensor repack(const at::Tensor& t, int64_t dim, int64_t world, int64_t blocks) {
  auto shape = t.sizes().vec();
  std::vector<int64_t> split(shape.begin(), shape.begin() + dim);
  split.insert(split.end(), {world, blocks, shape[dim] / (world * blocks)});
  split.insert(split.end(), shape.begin() + dim + 1, shape.end());
  return t.reshape(split).transpose(dim, dim + 1).reshape(shape);
}

// Full tensor of a (possibly sharded) local block, gathered over each mesh dim it is sharded on,
// the last-applied sharding first (FSDP's chunk of a tensor-parallel shard, then tp).
at::Tensor gather_full(const dist::DeviceMesh& mesh, const at::Tensor& local, const nn::ParamPlacement& place) {
  // The shape each level split: the global shape, narrowed by every level before it.
  std::vector<std::vector<int64_t>> split_shape;
  auto shape = place.global_shape;
  for (size_t d = 0; d < place.placements.size(); ++d) {
    split_shape.push_back(shape);
    if (place.placements[d].kind != nn::Placement::Kind::Shard) continue;
    auto& g = mesh.group(place.mesh_dims[d]);
    const int64_t dim = place.placements[d].dim;
    shape[dim] = dist::chunk_sizes(shape[dim], g.size())[g.rank()];  // even for packed shards
  }
  at::Tensor t = local;
  for (size_t d = place.placements.size(); d-- > 0;) {
    if (place.placements[d].kind != nn::Placement::Kind::Shard) continue;
    auto& g = mesh.group(place.mesh_dims[d]);
    const int64_t dim = place.placements[d].dim;
    t = dist::all_gather_uneven(g, t.contiguous(), dim, dist::chunk_sizes(split_shape[d][dim], g.size()));
    if (place.placements[d].blocks > 1) t = repack(t, dim, g.size(), place.placements[d].blocks);
  }
  return t;
}

// A file whose bytes changed since it was saved is named, before any of it is read.
void verify_checksum(const fs::path& path, const std::map<std::string, std::string>& checksums) {
  auto it = checksums.find(path.filename().string());
  if (it == checksums.end()) return;  // written before checksums were recorded
  MT_CHECK(fs::exists(path), path, " is missing");
  const auto actual = util::file_checksum(path);
  MT_CHECK(actual == it->second, path, " is corrupted: its checksum is ", actual, " but the manifest recorded ",
           it->second);
}

struct SavedBlock {
  std::string file;
  std::string tensor;  // its name in the file
  std::vector<int64_t> global_shape, offset, shape;
};

// Copies the overlap of saved blocks with the local block [offset, offset + local.shape).
int64_t fill_from(const std::vector<SavedBlock>& saved, const at::Tensor& local,
                  const std::vector<int64_t>& offset, std::map<std::string, std::unique_ptr<io::SafetensorsFile>>& files) {
  int64_t copied = 0;
  for (auto& b : saved) {
    std::vector<int64_t> lo(local.dim()), hi(local.dim());
    bool empty = false;
    for (int64_t d = 0; d < local.dim(); ++d) {
      lo[d] = std::max(offset[d], b.offset[d]);
      hi[d] = std::min(offset[d] + local.size(d), b.offset[d] + b.shape[d]);
      empty |= hi[d] <= lo[d];
    }
    if (empty) continue;
    auto& file = files.at(b.file);  // opened, and the block's shape checked, when the manifests were read
    // Read only the rows of the first dim, then narrow the others in memory.
    at::Tensor part =
        local.dim() == 0 ? file->read(b.tensor) : file->read_slice(b.tensor, 0, lo[0] - b.offset[0], hi[0] - lo[0]);
    at::Tensor dst = local;
    for (int64_t d = 0; d < local.dim(); ++d) {
      if (d > 0) part = part.narrow(d, lo[d] - b.offset[d], hi[d] - lo[d]);
      dst = dst.narrow(d, lo[d] - offset[d], hi[d] - lo[d]);
    }
    dst.copy_(part.to(local.scalar_type()));
    copied += part.numel();
  }
  return copied;
}

}  // namespace

fs::path save_training_checkpoint(const fs::path& output_dir, parallel::ParallelModel& model, const AdamW& optimizer,
                                  const TrainerState& state) {
  const auto& mesh = model.mesh();
  auto& world = mesh.group(MeshDim::World);
  const int rank = mesh.rank();
  const auto name = "checkpoint-" + std::to_string(state.global_step);
  const auto final_dir = output_dir / name;
  const auto tmp_dir = output_dir / ("." + name + ".tmp");
  if (rank == 0) {
    fs::remove_all(tmp_dir);
    fs::create_directories(tmp_dir);
  }
  dist::barrier(world);
  MT_CHECK(fs::is_directory(tmp_dir), "rank ", rank, ": ", tmp_dir, " does not exist after rank 0 created it; "
           "--output_dir must be a directory that every node shares");

  std::vector<std::pair<std::string, at::Tensor>> tensors;
  nlohmann::json manifest = nlohmann::json::object();
  for (auto& b : blocks_of(model, optimizer)) {
    if (!owns(mesh, *b.place)) continue;
    // A packed parameter's boxes are stored as key, key@1, ...; the manifest names their key.
    auto boxes = b.place->boxes(b.local);
    for (size_t i = 0; i < boxes.size(); ++i) {
      const auto stored = i == 0 ? b.key : b.key + "@" + std::to_string(i);
      tensors.emplace_back(stored, boxes[i].local.contiguous());
      manifest[stored] = {{"key", b.key}, {"global_shape", b.place->global_shape}, {"offset", boxes[i].offset}};
    }
  }
  if (rank == 0) {
    tensors.emplace_back("optim.step", at::scalar_tensor(optimizer.steps_taken(), at::kLong));
    manifest["optim.step"] = {{"global_shape", nlohmann::json::array()}, {"offset", nlohmann::json::array()}};
  }
  io::save_safetensors(tmp_dir / rank_file("shards", rank, "safetensors"), tensors);
  io::save_safetensors(tmp_dir / rank_file("rng", rank, "safetensors"),
                       {{"cpu", at::detail::getDefaultCPUGenerator().get_state()}});
  for (auto file : {rank_file("shards", rank, "safetensors"), rank_file("rng", rank, "safetensors")})
    manifest[kFilesKey][file] = util::file_checksum(tmp_dir / file);
  util::write_file_atomic(tmp_dir / rank_file("manifest", rank, "json"), manifest.dump() + "\n");
  if (rank == 0) {
    const auto& s = mesh.sizes();
    nlohmann::json j = {{"global_step", state.global_step},
                        {"data_position", state.data_position},
                        {"world_size", mesh.world_size()},
                        {"mesh", {{"dp_replicate", s.dp_replicate}, {"dp_shard", s.dp_shard}, {"cp", s.cp},
                                  {"sp", s.sp}, {"tp", s.tp}}},
                        {"args", state.args}};
    if (s.pp > 1) j["mesh"]["pp"] = s.pp;
    util::write_file_atomic(tmp_dir / "trainer_state.json", j.dump(2) + "\n");
    util::write_file_atomic(tmp_dir / "config.json", model.model().config().to_json().dump(2) + "\n");
  }
  dist::barrier(world);
  if (rank == 0) {
    util::sync_path(tmp_dir);
    // Swap in: an older checkpoint of the same step is moved aside first, removed last.
    const auto old_dir = output_dir / ("." + name + ".old");
    fs::remove_all(old_dir);
    if (fs::exists(final_dir)) fs::rename(final_dir, old_dir);
    fs::rename(tmp_dir, final_dir);
    util::sync_path(output_dir);
    fs::remove_all(old_dir);
  }
  dist::barrier(world);
  return final_dir;
}

TrainerState load_training_checkpoint(const fs::path& dir, parallel::ParallelModel& model, AdamW& optimizer) {
  MT_CHECK(fs::is_directory(dir), "checkpoint directory ", dir, " does not exist");
  nlohmann::json state_json;
  std::map<std::string, std::vector<SavedBlock>> saved;
  std::map<std::string, std::string> checksums;  // file name -> checksum recorded when it was saved
  int saved_world = 0;
  try {
    state_json = nlohmann::json::parse(util::read_file(dir / "trainer_state.json"));
    saved_world = static_cast<int>(util::json_int(state_json.at("world_size"), "world_size"));
    MT_CHECK(saved_world >= 1, dir / "trainer_state.json", ": world_size ", saved_world);
    for (int r = 0; r < saved_world; ++r) {
      auto manifest = nlohmann::json::parse(util::read_file(dir / rank_file("manifest", r, "json")));
      if (manifest.contains(kFilesKey))
        for (auto& [file, sum] : manifest[kFilesKey].items()) checksums[file] = sum.get<std::string>();
      manifest.erase(kFilesKey);
      for (auto& [stored, entry] : manifest.items()) {
        SavedBlock b{rank_file("shards", r, "safetensors"), stored,
                     util::json_ints(entry.at("global_shape"), stored + " global_shape"),
                     util::json_ints(entry.at("offset"), stored + " offset"), {}};
        saved[entry.value("key", stored)].push_back(b);
      }
    }
  } catch (const nlohmann::json::exception& e) {
    fail(dir.string(), ": malformed checkpoint metadata: ", e.what());
  }
  // Block shapes come from the shard files' headers (validated when opened).
  std::map<std::string, std::unique_ptr<io::SafetensorsFile>> files;
  for (auto& [key, blocks] : saved)
    for (auto& b : blocks) {
      auto& file = files[b.file];
      if (!file) {
        verify_checksum(dir / b.file, checksums);
        file = std::make_unique<io::SafetensorsFile>(dir / b.file);
      }
      MT_CHECK(file->contains(b.tensor), dir / b.file, " has no tensor ", b.tensor, " although its manifest lists it");
      b.shape = file->info(b.tensor).shape;
      MT_CHECK(b.shape.size() == b.global_shape.size() && b.offset.size() == b.global_shape.size() &&
                   b.global_shape == blocks.front().global_shape,
               dir / b.file, ": ", b.tensor, " has an inconsistent manifest entry");
      for (size_t d = 0; d < b.shape.size(); ++d)
        MT_CHECK(b.offset[d] >= 0 && b.offset[d] + b.shape[d] <= b.global_shape[d], dir / b.file, ": block of ", key,
                 " lies outside its global shape ", at::IntArrayRef(b.global_shape));
    }

  at::NoGradGuard no_grad;
  for (auto& b : blocks_of(model, optimizer)) {
    auto it = saved.find(b.key);
    MT_CHECK(it != saved.end(), dir, " has no tensor ", b.key);
    MT_CHECK(it->second.front().global_shape == b.place->global_shape, dir, ": ", b.key, " has global shape ",
             at::IntArrayRef(it->second.front().global_shape), " but the model needs ", at::IntArrayRef(b.place->global_shape));
    int64_t copied = 0;
    for (auto& box : b.place->boxes(b.local)) copied += fill_from(it->second, box.local, box.offset, files);
    MT_CHECK(copied == b.local.numel(), dir, ": the saved blocks of ", b.key, " cover ", copied, " of the ", b.local.numel(),
             " elements this rank needs");
  }
  auto step = saved.find("optim.step");
  MT_CHECK(step != saved.end(), dir, " has no optimizer step");
  optimizer.set_steps_taken(files[step->second.front().file]->read(step->second.front().tensor).item<int64_t>());

  if (saved_world == model.mesh().world_size()) {  // RNG streams only carry over to the same layout
    verify_checksum(dir / rank_file("rng", model.mesh().rank(), "safetensors"), checksums);
    io::SafetensorsFile rng(dir / rank_file("rng", model.mesh().rank(), "safetensors"));
    auto generator = at::detail::getDefaultCPUGenerator();
    generator.set_state(rng.read("cpu"));
  }
  try {
    TrainerState state{util::json_int(state_json.at("global_step"), "global_step"),
                       util::json_int(state_json.at("data_position"), "data_position"),
                       state_json.value("args", nlohmann::json::object())};
    MT_CHECK(state.global_step >= 0 && state.data_position >= 0, dir / "trainer_state.json",
             ": negative step or data position");
    return state;
  } catch (const nlohmann::json::exception& e) {
    fail(dir.string(), "/trainer_state.json is malformed: ", e.what());
  }
}

namespace {

// The HF tensors this pipeline stage writes: its own, without the tied embedding's copy that
// the last stage holds (the first writes it).
std::vector<models::HfTensor> stage_hf_tensors(parallel::ParallelModel& model) {
  auto& m = model.model();
  const auto& mesh = model.mesh();
  std::vector<models::HfTensor> out;
  for (auto& t : models::hf_tensors(m)) {
    const auto& place = m.placement(t.param);
    if (place.is(MeshDim::PpEnds, nn::Placement::Kind::Replicate) && mesh.group(MeshDim::PpEnds).rank() != 0) continue;
    out.push_back(t);
  }
  return out;
}

// A JSON text over the pp group, as its length and then its bytes.
void send_text(dist::Group& g, const std::string& text, int dst) {
  auto n = at::tensor({static_cast<int64_t>(text.size())}, at::kLong);
  dist::send(g, n, dst);
  auto bytes = at::empty({static_cast<int64_t>(text.size())}, at::kByte);
  std::memcpy(bytes.data_ptr(), text.data(), text.size());
  dist::send(g, bytes, dst);
}

std::string recv_text(dist::Group& g, int src) {
  auto n = at::empty({1}, at::kLong);
  dist::recv(g, n, src);
  auto bytes = at::empty({n.item<int64_t>()}, at::kByte);
  dist::recv(g, bytes, src);
  return std::string(static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(bytes.numel()));
}

// Where an HF tensor comes in the serial model: the embedding, the decoder layers in order, then
// the final norm and the head.
int64_t serial_position(const std::string& name) {
  static const std::string layers = "model.layers.";
  if (name.starts_with("model.embed_tokens.")) return 0;
  if (!name.starts_with(layers)) return std::numeric_limits<int64_t>::max();
  return 1 + std::stoll(name.substr(layers.size()));
}

// Under pipeline parallelism rank 0 writes every stage's tensors, in the serial model's order.
// Each stage gathers its tensors over its own shard dims as usual; the member of
// rank 0's pp group on stage s sends them on to rank 0, after the list of their names and shapes.
void export_pipelined(parallel::ParallelModel& model, const fs::path& dir, uint64_t max_shard_bytes) {
  auto& m = model.model();
  const auto& mesh = model.mesh();
  auto& pp = mesh.group(MeshDim::Pp);
  const bool on_rank0_pp_group = pp.ranks().front() == 0;
  std::map<std::string, at::Tensor> params;
  for (auto& [name, p] : m.named_params()) params[name] = p;
  const auto mine = stage_hf_tensors(model);
  std::string gathered_name;
  at::Tensor gathered;
  auto local = [&](const models::HfTensor& t) {
    if (t.param != gathered_name) {
      gathered = gather_full(mesh, params.at(t.param).detach(), m.placement(t.param));
      gathered_name = t.param;
    }
    return t.slice_of(gathered);
  };
  if (pp.rank() != 0) {
    if (on_rank0_pp_group) {
      nlohmann::json specs = nlohmann::json::array();
      for (auto& t : mine) specs.push_back({t.name, static_cast<int>(params.at(t.param).scalar_type()), t.shape});
      send_text(pp, specs.dump(), 0);
    }
    for (auto& t : mine) {
      auto full = local(t).contiguous();
      if (on_rank0_pp_group) dist::send(pp, full, 0);
    }
  } else if (mesh.rank() != 0) {
    for (auto& t : mine) local(t);  // stage 0's gathers, in rank 0's order
  } else {
    struct Entry {
      io::TensorSpec spec;
      int rank;      // the pp rank that holds it
      size_t local;  // its index in `mine` on rank 0
    };
    std::vector<Entry> entries;
    for (size_t i = 0; i < mine.size(); ++i)
      entries.push_back({{mine[i].name, params.at(mine[i].param).scalar_type(), mine[i].shape}, 0, i});
    for (int s = 1; s < pp.size(); ++s)
      for (auto& entry : nlohmann::json::parse(recv_text(pp, s)))
        entries.push_back({{entry[0].get<std::string>(), static_cast<at::ScalarType>(entry[1].get<int>()),
                            entry[2].get<std::vector<int64_t>>()},
                           s, 0});
    // The serial order: with virtual stages a rank holds layers that are not contiguous. The sort
    // is stable, so each rank's tensors keep the order it sends them in.
    std::stable_sort(entries.begin(), entries.end(),
                     [](const Entry& a, const Entry& b) { return serial_position(a.spec.name) < serial_position(b.spec.name); });
    std::vector<io::TensorSpec> specs;
    for (auto& e : entries) specs.push_back(e.spec);
    auto source = [&](size_t i) {
      const auto& e = entries[i];
      if (e.rank == 0) return local(mine[e.local]);
      auto t = at::empty(e.spec.shape, at::TensorOptions().dtype(e.spec.dtype));
      dist::recv(pp, t, e.rank);
      return t;
    };
    io::save_checkpoint_tensors(dir, specs, source, max_shard_bytes);
    util::write_file_atomic(dir / "config.json", m.config().to_json().dump(2) + "\n");
  }
  dist::barrier(mesh.group(MeshDim::World));
}

}  // namespace

void export_hf_checkpoint(parallel::ParallelModel& model, const fs::path& dir, uint64_t max_shard_bytes) {
  if (model.mesh().size(MeshDim::Pp) > 1) return export_pipelined(model, dir, max_shard_bytes);
  auto& m = model.model();
  const auto& mesh = model.mesh();
  std::map<std::string, at::Tensor> params;
  for (auto& [name, p] : m.named_params()) params[name] = p;
  // The checkpoint layout's tensors (per-expert slices of a fused parameter come one after the
  // other), each cut from its parameter gathered once.
  auto tensors = models::hf_tensors(m);
  std::vector<io::TensorSpec> specs;
  const auto dtype = m.config().storage_dtype();  // the dtype the checkpoint came in, or --save_dtype
  for (auto& t : tensors) specs.push_back({t.name, dtype, t.shape});
  std::string gathered_name;
  at::Tensor gathered;
  auto source = [&](size_t i) {
    const auto& t = tensors[i];
    if (t.param != gathered_name) {
      gathered = gather_full(mesh, params.at(t.param).detach(), m.placement(t.param));
      gathered_name = t.param;
    }
    return t.slice_of(gathered).to(dtype);
  };
  if (mesh.rank() == 0) {
    io::save_checkpoint_tensors(dir, specs, source, max_shard_bytes);
    util::write_file_atomic(dir / "config.json", m.config().to_json().dump(2) + "\n");
  } else {
    for (size_t i = 0; i < tensors.size(); ++i) source(i);  // the same gathers, in the same order
  }
  dist::barrier(mesh.group(MeshDim::World));
}

namespace {

// checkpoint-N directories by N, oldest first.
std::vector<std::pair<int64_t, fs::path>> checkpoints_in(const fs::path& output_dir) {
  std::vector<std::pair<int64_t, fs::path>> found;
  if (!fs::is_directory(output_dir)) return found;
  for (auto& entry : fs::directory_iterator(output_dir)) {
    std::smatch m;
    auto name = entry.path().filename().string();
    if (entry.is_directory() && std::regex_match(name, m, kCheckpointName)) found.emplace_back(std::stoll(m[1]), entry.path());
  }
  std::sort(found.begin(), found.end());
  return found;
}

// The first file a complete checkpoint would have and this one lacks; empty when none is missing.
std::string missing_file(const fs::path& dir) {
  int world = 0;
  try {
    world = static_cast<int>(util::json_int(
        nlohmann::json::parse(util::read_file(dir / "trainer_state.json")).at("world_size"), "world_size"));
  } catch (const std::exception&) {
    return "trainer_state.json";
  }
  for (int r = 0; r < world; ++r)
    for (auto name : {rank_file("manifest", r, "json"), rank_file("shards", r, "safetensors")})
      if (!fs::exists(dir / name)) return name;
  return "";
}

}  // namespace

std::optional<fs::path> latest_checkpoint(const fs::path& output_dir) {
  auto found = checkpoints_in(output_dir);
  for (auto it = found.rbegin(); it != found.rend(); ++it) {
    const auto missing = missing_file(it->second);
    if (missing.empty()) return it->second;
    std::fprintf(stderr, "warning: skipping the incomplete checkpoint %s (no %s)\n", it->second.c_str(), missing.c_str());
  }
  return std::nullopt;
}

void prune_checkpoints(const fs::path& output_dir, int64_t keep) {
  auto found = checkpoints_in(output_dir);
  for (size_t i = 0; i + keep < found.size(); ++i) fs::remove_all(found[i].second);
}

}  // namespace meshtrain::train

#include "nn/placement.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "util/check.h"

namespace meshtrain::nn {

bool ParamPlacement::is_whole() const {
  return std::none_of(placements.begin(), placements.end(), [](auto& p) { return p.kind == Placement::Kind::Shard; });
}

const Placement* ParamPlacement::on(MeshDim dim) const {
  auto it = std::find(mesh_dims.begin(), mesh_dims.end(), dim);
  return it == mesh_dims.end() ? nullptr : &placements[static_cast<size_t>(it - mesh_dims.begin())];
}

void ParamPlacement::split(MeshDim dim, const std::vector<std::pair<MeshDim, Placement>>& entries) {
  auto it = std::find(mesh_dims.begin(), mesh_dims.end(), dim);
  MT_CHECK(it != mesh_dims.end(), "placement has no entry on mesh dim ", name_of(dim), " to split");
  for (const auto& [d, p] : entries)
    MT_CHECK(d == dim || !on(d), "placement already has an entry on mesh dim ", name_of(d));
  placements.erase(placements.begin() + (it - mesh_dims.begin()));
  mesh_dims.erase(it);
  for (const auto& [d, p] : entries) {
    mesh_dims.push_back(d);
    placements.push_back(p);
  }
}

void ParamPlacement::narrow(int64_t dim, int64_t start, int64_t length) {
  if (dim != packed_dim) {
    offset[dim] += start;
    return;
  }
  std::vector<Run> kept;
  for (const auto& run : packed_runs) {
    const int64_t lo = std::max(run.local_start, start);
    const int64_t hi = std::min(run.local_start + run.length, start + length);
    if (hi > lo) kept.push_back({lo - start, run.global_start + lo - run.local_start, hi - lo});
  }
  packed_runs = kept;
}

void ParamPlacement::pack(int64_t dim, int64_t blocks, int64_t start, int64_t length) {
  MT_CHECK(packed_dim < 0 && offset[dim] == 0, "a packed shard needs a whole dim; dim ", dim, " is already split");
  const int64_t block = global_shape[dim] / blocks;
  packed_dim = dim;
  packed_runs.clear();
  for (int64_t b = 0; b < blocks; ++b) packed_runs.push_back({b * length, b * block + start, length});
}

std::vector<Box> ParamPlacement::boxes(const at::Tensor& local) const {
  if (packed_dim < 0) return {{local, offset}};
  std::vector<Box> out;
  for (const auto& run : packed_runs) {
    if (run.length == 0) continue;
    auto box_offset = offset;
    box_offset[packed_dim] = run.global_start;
    out.push_back({local.narrow(packed_dim, run.local_start, run.length), box_offset});
  }
  return out;
}

at::Tensor ParamPlacement::local_of(const at::Tensor& full, at::IntArrayRef local_shape) const {
  auto local = at::empty(local_shape, full.options());
  for (auto& box : boxes(local)) {
    at::Tensor part = full;
    for (int64_t d = 0; d < part.dim(); ++d) part = part.narrow(d, box.offset[d], box.local.size(d));
    box.local.copy_(part);
  }
  return local;
}

}  // namespace meshtrain::nn

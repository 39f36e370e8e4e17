// The placement record every parameter carries: on which mesh dims it is sharded (and along
// which tensor dim), replicated or partial, plus its global shape and this rank's offset. The
// DTensor idea reduced to what training needs. A serial model holds only replicated records.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace meshtrain::nn {

struct Placement {
  enum class Kind { Replicate, Shard, Partial };
  Kind kind = Kind::Replicate;
  int64_t dim = -1;  // tensor dim, for Shard

  static Placement replicate() { return {}; }
  static Placement shard(int64_t d) { return {Kind::Shard, d}; }
};

struct ParamPlacement {
  std::vector<std::string> mesh_dims;  // names of the mesh dims the placements refer to
  std::vector<Placement> placements;   // one per mesh dim
  std::vector<int64_t> global_shape;
  std::vector<int64_t> offset;         // of this rank's block in the global tensor

  // A parameter held whole by every rank.
  static ParamPlacement whole(const std::vector<int64_t>& shape) {
    return {{}, {}, shape, std::vector<int64_t>(shape.size(), 0)};
  }
  bool is_whole() const {
    for (const auto& p : placements)
      if (p.kind != Placement::Kind::Replicate) return false;
    return true;
  }
};

}  // namespace meshtrain::nn

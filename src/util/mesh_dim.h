// The mesh's dims and the groups made of them, named once: the six dims (pp outermost, tp varies
// fastest), the flattened dims, expert parallelism's groups and the pair of pipeline end stages. The mesh, the placement records and
// every parallel unit name a group by this enum; names are text only where the CLI prints them.
#pragma once
#include <array>

namespace meshtrain {

enum class MeshDim {
  Pp, DpReplicate, DpShard, Cp, Sp, Tp,              // the dims, outer to inner
  Dp, DpShardCp, DpCp, DpReplicateSp, DpCpSp, World,  // flattened: several dims as one
  Ep, Etp, EpReplicate,                               // expert parallelism (DeviceMesh says which ranks)
  PpEnds,  // the first and the last pipeline stage (tied embeddings); this rank alone on the others
};

inline constexpr std::array<MeshDim, 6> kMeshDims = {MeshDim::Pp, MeshDim::DpReplicate, MeshDim::DpShard,
                                                     MeshDim::Cp, MeshDim::Sp,          MeshDim::Tp};
inline constexpr std::array<MeshDim, 6> kFlattenedDims = {MeshDim::Dp,           MeshDim::DpShardCp,
                                                          MeshDim::DpCp,         MeshDim::DpReplicateSp,
                                                          MeshDim::DpCpSp,       MeshDim::World};
inline constexpr std::array<MeshDim, 3> kExpertDims = {MeshDim::Ep, MeshDim::Etp, MeshDim::EpReplicate};

// "dp_replicate", "dp_shard_cp", "ep_replicate", ...
const char* name_of(MeshDim dim);

}  // namespace meshtrain

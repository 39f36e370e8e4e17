// The mesh's dims and the groups made of them, named once: the five dims (tp varies fastest),
// the flattened dims, and expert parallelism's groups. The mesh, the placement records and
// every parallel unit name a group by this enum; names are text only where the CLI prints them.
#pragma once
#include <array>

namespace meshtrain {

enum class MeshDim {
  DpReplicate, DpShard, Cp, Sp, Tp,                  // the dims, outer to inner
  Dp, DpShardCp, DpCp, DpReplicateSp, DpCpSp, World,  // flattened: several dims as one
  Ep, Etp, EpReplicate,                               // expert parallelism (DeviceMesh says which ranks)
};

inline constexpr std::array<MeshDim, 5> kMeshDims = {MeshDim::DpReplicate, MeshDim::DpShard, MeshDim::Cp, MeshDim::Sp,
                                                     MeshDim::Tp};
inline constexpr std::array<MeshDim, 6> kFlattenedDims = {MeshDim::Dp,           MeshDim::DpShardCp,
                                                          MeshDim::DpCp,         MeshDim::DpReplicateSp,
                                                          MeshDim::DpCpSp,       MeshDim::World};
inline constexpr std::array<MeshDim, 3> kExpertDims = {MeshDim::Ep, MeshDim::Etp, MeshDim::EpReplicate};

// "dp_replicate", "dp_shard_cp", "ep_replicate", ...
const char* name_of(MeshDim dim);

}  // namespace meshtrain

#include "util/mesh_dim.h"

namespace meshtrain {

const char* name_of(MeshDim dim) {
  switch (dim) {
    case MeshDim::Pp: return "pp";
    case MeshDim::DpReplicate: return "dp_replicate";
    case MeshDim::DpShard: return "dp_shard";
    case MeshDim::Cp: return "cp";
    case MeshDim::Sp: return "sp";
    case MeshDim::Tp: return "tp";
    case MeshDim::Dp: return "dp";
    case MeshDim::DpShardCp: return "dp_shard_cp";
    case MeshDim::DpCp: return "dp_cp";
    case MeshDim::DpReplicateSp: return "dp_replicate_sp";
    case MeshDim::DpCpSp: return "dp_cp_sp";
    case MeshDim::World: return "world";
    case MeshDim::Ep: return "ep";
    case MeshDim::Etp: return "etp";
    case MeshDim::EpReplicate: return "ep_replicate";
    case MeshDim::PpEnds: return "pp_ends";
  }
  return "?";
}

}  // namespace meshtrain

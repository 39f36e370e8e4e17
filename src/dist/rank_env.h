// Who this process is: rank, world size, local rank and rendezvous address, read once at the
// CLI edge from the launcher's environment (meshtrain launch / torchrun, mpirun, srun).
#pragma once
#include <string>

namespace meshtrain::dist {

struct RankEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  int restart = 0;  // how often the launcher restarted the ranks (MESHTRAIN_ / TORCHELASTIC_RESTART_COUNT)
  std::string launcher = "none";  // torchrun | mpirun | srun | none
};

// torchrun's RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE/MASTER_ADDR/MASTER_PORT, else
// OMPI_COMM_WORLD_*, else SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID; a single process otherwise.
// Inconsistent values (rank >= world size, ...) are an error naming them.
RankEnv rank_env_from_environment();

}  // namespace meshtrain::dist

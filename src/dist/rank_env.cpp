#include "dist/rank_env.h"

#include <cstdlib>

#include "util/check.h"

namespace meshtrain::dist {

namespace {

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

int env_int(const char* name, int fallback) {
  const char* v = env(name);
  if (!v) return fallback;
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  MT_CHECK(end && (*end == 0 || *end == '('), "environment variable ", name, "='", v, "' is not an integer");
  return static_cast<int>(x);
}

}  // namespace

RankEnv rank_env_from_environment() {
  RankEnv e;
  if (env("RANK") && env("WORLD_SIZE")) {
    e.launcher = "torchrun";
    e.rank = env_int("RANK", 0);
    e.world_size = env_int("WORLD_SIZE", 1);
    e.local_rank = env_int("LOCAL_RANK", e.rank);
    e.local_world_size = env_int("LOCAL_WORLD_SIZE", e.world_size);
  } else if (env("OMPI_COMM_WORLD_RANK")) {
    e.launcher = "mpirun";
    e.rank = env_int("OMPI_COMM_WORLD_RANK", 0);
    e.world_size = env_int("OMPI_COMM_WORLD_SIZE", 1);
    e.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0);
    e.local_world_size = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", 1);
  } else if (env("SLURM_PROCID") && env("SLURM_NTASKS")) {
    e.launcher = "srun";
    e.rank = env_int("SLURM_PROCID", 0);
    e.world_size = env_int("SLURM_NTASKS", 1);
    e.local_rank = env_int("SLURM_LOCALID", 0);
    e.local_world_size = env_int("SLURM_NTASKS_PER_NODE", 1);  // "2(x3)" reads as 2
    if (!env("MASTER_ADDR") && env("SLURM_LAUNCH_NODE_IPADDR")) e.master_addr = env("SLURM_LAUNCH_NODE_IPADDR");
  }
  if (env("MASTER_ADDR")) e.master_addr = env("MASTER_ADDR");
  e.master_port = env_int("MASTER_PORT", e.master_port);
  e.restart = env_int("MESHTRAIN_RESTART_COUNT", env_int("TORCHELASTIC_RESTART_COUNT", 0));
  MT_CHECK(e.world_size >= 1 && e.rank >= 0 && e.rank < e.world_size, e.launcher, " environment: rank ",
           e.rank, " is not in [0, world size ", e.world_size, ")");
  MT_CHECK(e.local_world_size >= 1 && e.local_rank >= 0 && e.local_rank < e.local_world_size, e.launcher,
           " environment: local rank ", e.local_rank, " is not in [0, local world size ", e.local_world_size, ")");
  MT_CHECK(e.master_port > 0 && e.master_port < 65536, "MASTER_PORT ", e.master_port, " is not a port");
  return e;
}

}  // namespace meshtrain::dist

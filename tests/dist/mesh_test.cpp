// DeviceMesh layout (tp fastest, flattened dims) and size validation, without processes.
#include <gtest/gtest.h>

#include "dist/device_mesh.h"
#include "dist/rank_env.h"
#include "support/run_ranks.h"
#include "util/check.h"

using namespace meshtrain;
using meshtrain::testing::sizes;

TEST(DeviceMesh, TpVariesFastestAndGroupsHoldTheRightRanks) {
  // 2 x 2 x 1 x 1 x 3 = 12 ranks: rank = ((r * 2 + s) * 3) + t
  dist::DeviceMesh mesh(sizes(2, 2, 1, 1, 3), 7);  // r=1, s=0, t=1
  EXPECT_EQ(mesh.coordinate("dp_replicate"), 1);
  EXPECT_EQ(mesh.coordinate("dp_shard"), 0);
  EXPECT_EQ(mesh.coordinate("tp"), 1);
  EXPECT_EQ(mesh.group_ranks("tp"), (std::vector<int>{6, 7, 8}));
  EXPECT_EQ(mesh.group_ranks("dp_shard"), (std::vector<int>{7, 10}));
  EXPECT_EQ(mesh.group_ranks("dp_replicate"), (std::vector<int>{1, 7}));
  EXPECT_EQ(mesh.group_ranks("dp"), (std::vector<int>{1, 4, 7, 10}));
  EXPECT_EQ(mesh.coordinate("dp"), 2);
  EXPECT_EQ(mesh.size("dp_cp"), 4);
  EXPECT_EQ(mesh.group_ranks("world").size(), 12u);
}

TEST(DeviceMesh, ExpertGroupsAreBlocksOfTheDpShardCpRanks) {
  auto s = sizes(1, 4, 1, 1, 2);  // dp_shard_cp group of rank 0: 0, 2, 4, 6
  s.ep = 2;
  dist::DeviceMesh mesh(s, 0);
  EXPECT_EQ(mesh.group_ranks("ep"), (std::vector<int>{0, 2}));
  EXPECT_EQ(mesh.group_ranks("ep_replicate"), (std::vector<int>{0, 4}));
  EXPECT_EQ(mesh.size("ep_replicate"), 2);
  dist::DeviceMesh other(s, 7);  // tp 1, dp_shard 3
  EXPECT_EQ(other.group_ranks("ep"), (std::vector<int>{5, 7}));
  EXPECT_EQ(other.group_ranks("ep_replicate"), (std::vector<int>{3, 7}));
  s.ep = 3;
  EXPECT_THROW(dist::resolve_mesh_sizes(s, 8), UsageError);
}

TEST(DeviceMesh, RouterMaskingDrawsEpStridedFromTheTpGroupAndEtpFromItsBlocks) {
  auto s = sizes(2, 1, 1, 1, 4);  // tp groups 0-3 and 4-7
  s.ep = 2;
  s.ep_in_tp = true;
  dist::DeviceMesh mesh(s, 5);  // tp coordinate 1
  EXPECT_EQ(mesh.group_ranks("ep"), (std::vector<int>{5, 7}));
  EXPECT_EQ(mesh.group_ranks("etp"), (std::vector<int>{4, 5}));
  EXPECT_EQ(mesh.group_ranks("ep_replicate"), (std::vector<int>{1, 5}));
  EXPECT_EQ(mesh.size("etp"), 2);
  EXPECT_EQ(mesh.size("ep_replicate"), 2);
  EXPECT_EQ(mesh.expert_tensor_dim(), "etp");
  s.ep = 3;
  EXPECT_THROW(dist::resolve_mesh_sizes(s, 8), UsageError);
}

TEST(DeviceMesh, SizesMustMultiplyToTheWorld) {
  EXPECT_EQ(dist::resolve_mesh_sizes(sizes(2, -1, 1, 1, 2), 8).dp_shard, 2);
  try {
    dist::resolve_mesh_sizes(sizes(2, 2, 1, 1, 2), 6);
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_STREQ(e.what(),
                 "dp_replicate_size 2 x dp_shard_size 2 x cp_size 1 x sp_size 1 x tp_size 2 = 8 does not match the world size 6");
  }
  EXPECT_THROW(dist::resolve_mesh_sizes(sizes(1, -1, 1, 1, 4), 6), UsageError);
  try {
    dist::resolve_mesh_sizes(sizes(0, 1), 1);
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_STREQ(e.what(), "dp_replicate_size must be at least 1, but got 0");
  }
}

TEST(RankEnv, ReadsTorchrunMpirunAndSlurm) {
  for (auto v : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"})
    unsetenv(v);
  EXPECT_EQ(dist::rank_env_from_environment().world_size, 1);
  setenv("OMPI_COMM_WORLD_RANK", "3", 1);
  setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2", 1);
  auto e = dist::rank_env_from_environment();
  EXPECT_EQ(e.launcher, "mpirun");
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.local_world_size, 2);
  unsetenv("OMPI_COMM_WORLD_RANK");
  setenv("SLURM_PROCID", "5", 1);
  setenv("SLURM_NTASKS", "8", 1);
  setenv("SLURM_LOCALID", "1", 1);
  setenv("SLURM_NTASKS_PER_NODE", "4(x2)", 1);
  e = dist::rank_env_from_environment();
  EXPECT_EQ(e.launcher, "srun");
  EXPECT_EQ(e.rank, 5);
  EXPECT_EQ(e.local_world_size, 4);
  setenv("RANK", "2", 1);
  setenv("WORLD_SIZE", "2", 1);
  EXPECT_THROW(dist::rank_env_from_environment(), Error);  // rank 2 of 2
  for (auto v : {"RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"}) unsetenv(v);
}

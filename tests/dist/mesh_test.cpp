// DeviceMesh layout (tp fastest, flattened dims) and size validation, without processes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <tuple>

#include "dist/device_mesh.h"
#include "dist/rank_env.h"
#include "support/run_ranks.h"
#include "util/check.h"

using namespace meshtrain;
using meshtrain::testing::sizes;
using ::testing::HasSubstr;
using ::testing::StrEq;
using ::testing::ThrowsMessage;

TEST(DeviceMesh, TpVariesFastestAndGroupsHoldTheRightRanks) {
  // 2 x 2 x 1 x 1 x 3 = 12 ranks: rank = ((r * 2 + s) * 3) + t
  dist::DeviceMesh mesh(sizes(2, 2, 1, 1, 3), 7);  // r=1, s=0, t=1
  EXPECT_EQ(mesh.coordinate(MeshDim::DpReplicate), 1);
  EXPECT_EQ(mesh.coordinate(MeshDim::DpShard), 0);
  EXPECT_EQ(mesh.coordinate(MeshDim::Tp), 1);
  EXPECT_EQ(mesh.group_ranks(MeshDim::Tp), (std::vector<int>{6, 7, 8}));
  EXPECT_EQ(mesh.group_ranks(MeshDim::DpShard), (std::vector<int>{7, 10}));
  EXPECT_EQ(mesh.group_ranks(MeshDim::DpReplicate), (std::vector<int>{1, 7}));
  EXPECT_EQ(mesh.group_ranks(MeshDim::Dp), (std::vector<int>{1, 4, 7, 10}));
  EXPECT_EQ(mesh.coordinate(MeshDim::Dp), 2);
  EXPECT_EQ(mesh.size(MeshDim::DpCp), 4);
  EXPECT_EQ(mesh.group_ranks(MeshDim::World).size(), 12u);
}

TEST(DeviceMesh, ExpertGroupsAreBlocksOfTheDpShardCpRanks) {
  auto s = sizes(1, 4, 1, 1, 2);  // dp_shard_cp group of rank 0: 0, 2, 4, 6
  s.ep = 2;
  dist::DeviceMesh mesh(s, 0);
  EXPECT_EQ(mesh.group_ranks(MeshDim::Ep), (std::vector<int>{0, 2}));
  EXPECT_EQ(mesh.group_ranks(MeshDim::EpReplicate), (std::vector<int>{0, 4}));
  EXPECT_EQ(mesh.size(MeshDim::EpReplicate), 2);
  dist::DeviceMesh other(s, 7);  // tp 1, dp_shard 3
  EXPECT_EQ(other.group_ranks(MeshDim::Ep), (std::vector<int>{5, 7}));
  EXPECT_EQ(other.group_ranks(MeshDim::EpReplicate), (std::vector<int>{3, 7}));
  s.ep = 3;
  EXPECT_THAT([&] { dist::resolve_mesh_sizes(s, 8); },
              ThrowsMessage<UsageError>(HasSubstr("ep_size 3 must divide dp_shard_size 4 x cp_size 1")));
}

TEST(DeviceMesh, RouterMaskingDrawsEpStridedFromTheTpGroupAndEtpFromItsBlocks) {
  auto s = sizes(2, 1, 1, 1, 4);  // tp groups 0-3 and 4-7
  s.ep = 2;
  s.ep_in_tp = true;
  dist::DeviceMesh mesh(s, 5);  // tp coordinate 1
  EXPECT_EQ(mesh.group_ranks(MeshDim::Ep), (std::vector<int>{5, 7}));
  EXPECT_EQ(mesh.group_ranks(MeshDim::Etp), (std::vector<int>{4, 5}));
  EXPECT_EQ(mesh.group_ranks(MeshDim::EpReplicate), (std::vector<int>{1, 5}));
  EXPECT_EQ(mesh.size(MeshDim::Etp), 2);
  EXPECT_EQ(mesh.size(MeshDim::EpReplicate), 2);
  EXPECT_EQ(mesh.expert_tensor_dim(), MeshDim::Etp);
  s.ep = 3;
  EXPECT_THAT([&] { dist::resolve_mesh_sizes(s, 8); },
              ThrowsMessage<UsageError>(StrEq("ep_size 3 must divide tp_size 4: router-masking expert parallelism "
                                              "draws its ranks from the tp group")));
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
  EXPECT_THAT([] { dist::resolve_mesh_sizes(sizes(1, -1, 1, 1, 4), 6); },
              ThrowsMessage<UsageError>(StrEq("dp_shard_size -1: world size 6 is not divisible by dp_replicate_size 1 "
                                              "x cp_size 1 x sp_size 1 x tp_size 4 = 4")));
  try {
    dist::resolve_mesh_sizes(sizes(0, 1), 1);
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_STREQ(e.what(), "dp_replicate_size must be at least 1, but got 0");
  }
}

TEST(DeviceMesh, PpIsTheOutermostDimAndPpEndsPairsTheFirstAndLastStage) {
  auto s = sizes(1, 2, 1, 1, 2);  // 3 stages of 4 ranks: rank = pp * 4 + dp_shard * 2 + tp
  s.pp = 3;
  dist::DeviceMesh first(s, 1), middle(s, 6), last(s, 11);
  EXPECT_EQ(first.coordinate(MeshDim::Pp), 0);
  EXPECT_EQ(middle.coordinate(MeshDim::Pp), 1);
  EXPECT_EQ(last.coordinate(MeshDim::Pp), 2);
  EXPECT_EQ(middle.group_ranks(MeshDim::Pp), (std::vector<int>{2, 6, 10}));
  EXPECT_EQ(middle.group_ranks(MeshDim::DpShard), (std::vector<int>{4, 6}));  // within the stage
  EXPECT_EQ(middle.group_ranks(MeshDim::Dp), (std::vector<int>{4, 6}));
  EXPECT_EQ(middle.group_ranks(MeshDim::World).size(), 12u);
  EXPECT_EQ(first.group_ranks(MeshDim::PpEnds), (std::vector<int>{1, 9}));
  EXPECT_EQ(last.group_ranks(MeshDim::PpEnds), (std::vector<int>{3, 11}));
  EXPECT_EQ(middle.group_ranks(MeshDim::PpEnds), (std::vector<int>{6}));
  EXPECT_EQ(middle.size(MeshDim::PpEnds), 1);
  EXPECT_EQ(dist::resolve_mesh_sizes(s, 12).pp, 3);
  s.dp_shard = -1;
  EXPECT_EQ(dist::resolve_mesh_sizes(s, 12).dp_shard, 2);
  EXPECT_THAT([&] { dist::resolve_mesh_sizes(s, 8); },
              ThrowsMessage<UsageError>(StrEq("dp_shard_size -1: world size 8 is not divisible by pp_size 3 x "
                                              "dp_replicate_size 1 x cp_size 1 x sp_size 1 x tp_size 2 = 6")));
  s.dp_shard = 2;
  EXPECT_THAT([&] { dist::resolve_mesh_sizes(s, 8); },
              ThrowsMessage<UsageError>(StrEq("pp_size 3 x dp_replicate_size 1 x dp_shard_size 2 x cp_size 1 x "
                                              "sp_size 1 x tp_size 2 = 12 does not match the world size 8")));
  s.pp = 0;
  EXPECT_THAT([&] { dist::resolve_mesh_sizes(s, 8); },
              ThrowsMessage<UsageError>(StrEq("pp_size must be at least 1, but got 0")));
}

namespace {

// Clears every launcher variable for one test and restores the environment after it.
class LauncherEnvironment {
 public:
  LauncherEnvironment() {
    for (auto name : kNames) {
      if (const char* v = std::getenv(name)) saved_.emplace_back(name, v);
      unsetenv(name);
    }
  }
  ~LauncherEnvironment() {
    for (auto name : kNames) unsetenv(name);
    for (auto& [name, value] : saved_) setenv(name.c_str(), value.c_str(), 1);
  }
  void set(const char* name, const char* value) { setenv(name, value, 1); }

 private:
  static constexpr const char* kNames[] = {
      "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
      "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE",
      "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE", "SLURM_LAUNCH_NODE_IPADDR"};
  std::vector<std::pair<std::string, std::string>> saved_;
};

}  // namespace

TEST(RankEnv, ASingleProcessWithoutALauncher) {
  LauncherEnvironment env;
  auto e = dist::rank_env_from_environment();
  EXPECT_EQ(e.launcher, "none");
  EXPECT_EQ(e.world_size, 1);
  EXPECT_EQ(e.master_addr, "127.0.0.1");
  EXPECT_EQ(e.master_port, 29500);
}

TEST(RankEnv, ReadsTorchrun) {
  LauncherEnvironment env;
  env.set("RANK", "5");
  env.set("WORLD_SIZE", "8");
  env.set("LOCAL_RANK", "1");
  env.set("LOCAL_WORLD_SIZE", "4");
  env.set("MASTER_ADDR", "10.1.2.3");
  env.set("MASTER_PORT", "29400");
  auto e = dist::rank_env_from_environment();
  EXPECT_EQ(e.launcher, "torchrun");
  EXPECT_EQ(std::tuple(e.rank, e.world_size, e.local_rank, e.local_world_size), std::tuple(5, 8, 1, 4));
  EXPECT_EQ(e.master_addr, "10.1.2.3");
  EXPECT_EQ(e.master_port, 29400);
  env.set("RANK", "8");
  EXPECT_THAT([] { dist::rank_env_from_environment(); },
              ThrowsMessage<Error>(StrEq("torchrun environment: rank 8 is not in [0, world size 8)")));
  env.set("RANK", "x");
  EXPECT_THAT([] { dist::rank_env_from_environment(); },
              ThrowsMessage<Error>(StrEq("environment variable RANK='x' is not an integer")));
}

TEST(RankEnv, ReadsMpirunEvenInsideASlurmAllocation) {
  LauncherEnvironment env;
  env.set("OMPI_COMM_WORLD_RANK", "3");
  env.set("OMPI_COMM_WORLD_SIZE", "4");
  env.set("OMPI_COMM_WORLD_LOCAL_RANK", "1");
  env.set("OMPI_COMM_WORLD_LOCAL_SIZE", "2");
  // mpirun inside an salloc: SLURM describes the allocation's single task, OMPI the ranks.
  env.set("SLURM_PROCID", "0");
  env.set("SLURM_NTASKS", "1");
  env.set("SLURM_LAUNCH_NODE_IPADDR", "10.9.9.9");
  auto e = dist::rank_env_from_environment();
  EXPECT_EQ(e.launcher, "mpirun");
  EXPECT_EQ(std::tuple(e.rank, e.world_size, e.local_rank, e.local_world_size), std::tuple(3, 4, 1, 2));
  EXPECT_EQ(e.master_addr, "127.0.0.1");  // mpirun gives no address: MASTER_ADDR or loopback
  env.set("MASTER_ADDR", "10.0.0.1");
  EXPECT_EQ(dist::rank_env_from_environment().master_addr, "10.0.0.1");
}

TEST(RankEnv, ReadsSrunWithItsLaunchNodeAsMaster) {
  LauncherEnvironment env;
  env.set("SLURM_PROCID", "5");
  env.set("SLURM_NTASKS", "8");
  env.set("SLURM_LOCALID", "1");
  env.set("SLURM_NTASKS_PER_NODE", "4(x2)");
  env.set("SLURM_LAUNCH_NODE_IPADDR", "10.9.9.9");
  auto e = dist::rank_env_from_environment();
  EXPECT_EQ(e.launcher, "srun");
  EXPECT_EQ(std::tuple(e.rank, e.world_size, e.local_rank, e.local_world_size), std::tuple(5, 8, 1, 4));
  EXPECT_EQ(e.master_addr, "10.9.9.9");
  env.set("MASTER_ADDR", "10.0.0.1");  // an explicit address wins
  EXPECT_EQ(dist::rank_env_from_environment().master_addr, "10.0.0.1");
  env.set("SLURM_LOCALID", "4");
  EXPECT_THAT([] { dist::rank_env_from_environment(); },
              ThrowsMessage<Error>(StrEq("srun environment: local rank 4 is not in [0, local world size 4)")));
}

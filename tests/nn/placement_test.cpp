// Placement records: a fresh one spans the mesh as replicated, split() refines a dim, a packed
// shard is one run per block, a further shard of the packed dim (FSDP's rows of a tp shard)
// keeps the runs' overlap, and boxes / local_of cut exactly those rows.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nn/placement.h"
#include "util/check.h"

using meshtrain::MeshDim;
using meshtrain::nn::ParamPlacement;
using meshtrain::nn::Placement;
using ::testing::StrEq;
using ::testing::ThrowsMessage;

TEST(Placement, SplitRefinesADimAndAppendsTheNewEntriesInTheOrderApplied) {
  auto place = ParamPlacement::whole({8, 4});
  EXPECT_EQ(place.mesh_dims, (std::vector<MeshDim>{MeshDim::DpCpSp, MeshDim::Tp}));
  EXPECT_TRUE(place.is_whole());
  place.split(MeshDim::Tp, {{MeshDim::Tp, Placement::shard(0)}});
  place.split(MeshDim::DpCpSp, {{MeshDim::DpReplicateSp, Placement::replicate()},
                                {MeshDim::DpShardCp, Placement::shard(0)}});
  EXPECT_EQ(place.mesh_dims, (std::vector<MeshDim>{MeshDim::Tp, MeshDim::DpReplicateSp, MeshDim::DpShardCp}));
  EXPECT_FALSE(place.is_whole());
  EXPECT_TRUE(place.is(MeshDim::DpShardCp, Placement::Kind::Shard));
  EXPECT_EQ(place.on(MeshDim::DpCpSp), nullptr);
  EXPECT_THAT([&] { place.split(MeshDim::Cp, {}); },
              ThrowsMessage<meshtrain::Error>(StrEq("placement has no entry on mesh dim cp to split")));
  EXPECT_THAT([&] { place.split(MeshDim::Tp, {{MeshDim::DpShardCp, Placement::shard(1)}}); },
              ThrowsMessage<meshtrain::Error>(StrEq("placement already has an entry on mesh dim dp_shard_cp")));
}

TEST(Placement, PackedShardIsOneRunPerBlockAndNarrowsLikeItsRows) {
  // 8 rows = gate 0-3 | up 4-7; rank 1 of tp 2 holds [2, 3 | 6, 7].
  auto full = at::arange(16, at::kFloat).view({8, 2});
  auto place = ParamPlacement::whole({8, 2});
  place.pack(0, 2, 2, 2);
  auto local = place.local_of(full, {4, 2});
  EXPECT_TRUE(at::equal(local.select(1, 0), at::tensor({4.f, 6.f, 12.f, 14.f})));
  auto boxes = place.boxes(local);
  ASSERT_EQ(boxes.size(), 2u);
  EXPECT_EQ(boxes[1].offset, (std::vector<int64_t>{6, 0}));
  EXPECT_TRUE(at::equal(boxes[1].local, full.narrow(0, 6, 2)));
  // A further shard of local rows 1-2 straddles the blocks: rows 3 and 6.
  place.narrow(0, 1, 2);
  auto rows = place.local_of(full, {2, 2});
  EXPECT_TRUE(at::equal(rows.select(1, 0), at::tensor({6.f, 12.f})));
  ASSERT_EQ(place.boxes(rows).size(), 2u);
  // A shard of another dim moves the offset only.
  place.narrow(1, 1, 1);
  EXPECT_TRUE(at::equal(place.local_of(full, {2, 1}).view({-1}), at::tensor({7.f, 13.f})));
}

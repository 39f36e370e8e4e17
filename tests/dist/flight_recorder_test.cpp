// The flight recorder: a ring of the last K collectives (wrap-around, K = 0), async operations
// finished at their wait, the JSON record, every collective recorded with its number in its group,
// a time-out writing the record and the test skip hook (what an entry costs: bench/flight_recorder.cpp).
#include <gtest/gtest.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "dist/collectives.h"
#include "dist/flight_recorder.h"
#include "support/run_ranks.h"
#include "util/files.h"

using namespace meshtrain;
using meshtrain::testing::run_ranks;
using meshtrain::testing::sizes;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir(const std::string& name) {
  auto p = fs::temp_directory_path() / ("mt_flight_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  return p;
}

}  // namespace

TEST(FlightRecorder, TheRingKeepsTheLastKAndWrapsAround) {
  dist::FlightRecorder rec(4, 1, 2);
  rec.add_group(MeshDim::DpShard, {0, 1});
  std::vector<uint64_t> tokens;
  for (uint64_t seq = 1; seq <= 10; ++seq) tokens.push_back(rec.begin(MeshDim::DpShard, seq, "all_reduce", at::zeros({3, 5})));
  for (uint64_t seq = 1; seq <= 9; ++seq) rec.finish(tokens[seq - 1]);  // 1-6 were overwritten: ignored
  auto entries = rec.entries();
  ASSERT_EQ(entries.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(entries[i].seq, 7 + i);
    EXPECT_STREQ(entries[i].op, "all_reduce");
    EXPECT_EQ(entries[i].ndim, 2);
    EXPECT_EQ(entries[i].shape[0], 3);
    EXPECT_EQ(entries[i].shape[1], 5);
    EXPECT_EQ(entries[i].bytes, 60u);
    EXPECT_GT(entries[i].start_ns, 0);
  }
  EXPECT_GT(entries[2].end_ns, 0);  // seq 9
  EXPECT_EQ(entries[3].end_ns, 0);  // seq 10 still in flight
  EXPECT_EQ(rec.finished(), 9u);
  auto j = rec.to_json("test");
  EXPECT_EQ(j["recorded"], 10);
  EXPECT_EQ(j["groups"][0]["name"], "dp_shard");
  EXPECT_EQ(j["groups"][0]["ranks"], (std::vector<int>{0, 1}));
  EXPECT_EQ(j["groups"][0]["issued"], 10);
  EXPECT_EQ(j["entries"].size(), 4u);
  EXPECT_EQ(j["entries"][3]["end"], "not finished");
  EXPECT_EQ(j["entries"][3]["dtype"], "float32");
  EXPECT_EQ(j["entries"][3]["shape"], (std::vector<int64_t>{3, 5}));
}

TEST(FlightRecorder, SizeZeroRecordsNothingButCountsIssuedAndSteps) {
  dist::FlightRecorder rec(0, 0, 2);
  rec.add_group(MeshDim::Dp, {0, 1});
  const uint64_t token = rec.begin(MeshDim::Dp, 1, "all_reduce", at::zeros({2}));
  EXPECT_EQ(token, 0u);
  rec.finish(token);
  rec.finish_work(MeshDim::Dp, &token);
  rec.note_step(7);
  EXPECT_TRUE(rec.entries().empty());
  auto j = rec.to_json("test");
  EXPECT_TRUE(j["entries"].empty());
  EXPECT_EQ(j["groups"][0]["issued"], 1);
  EXPECT_EQ(j["last_step"], 7);
}

TEST(FlightRecorder, AnAsyncOperationFinishesAtTheWaitOfItsWork) {
  dist::FlightRecorder rec(8, 0, 2);
  int a = 0, b = 0;
  const auto ta = rec.begin(MeshDim::DpShard, 1, "all_gather", at::zeros({4}));
  rec.attach_work(ta, &a);
  const auto tb = rec.begin(MeshDim::Tp, 1, "all_reduce", at::zeros({4}));
  rec.attach_work(tb, &b);
  rec.finish_work(MeshDim::Tp, &a);  // not on this group: nothing finishes
  auto e = rec.entries();
  EXPECT_EQ(e[0].end_ns, 0);
  EXPECT_EQ(e[1].end_ns, 0);
  rec.finish_work(MeshDim::DpShard, &a);
  e = rec.entries();
  EXPECT_GT(e[0].end_ns, 0);
  EXPECT_EQ(e[1].end_ns, 0);
}

TEST(FlightRecorder, DumpWritesTheRecordAndNeverThrows) {
  const auto dir = temp_dir("dump");
  dist::FlightRecorder rec(4, 3, 4);
  rec.note_step(12);
  rec.begin(MeshDim::Ep, 5, "all_to_all", at::zeros({2, 3}, at::kBFloat16));
  EXPECT_FALSE(rec.dump("no path"));
  rec.set_dump_path(dir / "sub" / dist::flight_file_name(3));
  ASSERT_TRUE(rec.dump("SIGUSR1"));
  auto j = nlohmann::json::parse(util::read_file(dir / "sub/flight_rank3.json"));
  EXPECT_EQ(j["rank"], 3);
  EXPECT_EQ(j["world_size"], 4);
  EXPECT_EQ(j["reason"], "SIGUSR1");
  EXPECT_EQ(j["last_step"], 12);
  EXPECT_EQ(j["entries"][0]["group"], "ep");
  EXPECT_EQ(j["entries"][0]["seq"], 5);
  EXPECT_EQ(j["entries"][0]["op"], "all_to_all");
  EXPECT_EQ(j["entries"][0]["dtype"], "bfloat16");
  EXPECT_EQ(j["entries"][0]["step"], 12);
  rec.set_dump_path("/proc/no/such/dir/flight_rank3.json");
  EXPECT_FALSE(rec.dump("unwritable"));
  fs::remove_all(dir);
}

TEST(FlightRecorder, EveryCollectiveIsRecordedWithItsNumberInItsGroup) {
  run_ranks(sizes(1, 2), [](std::shared_ptr<dist::DeviceMesh> mesh) {
    auto rec = std::make_shared<dist::FlightRecorder>(64, mesh->rank(), 2);
    mesh->set_flight_recorder(rec);
    auto& g = mesh->group(MeshDim::DpShard);
    auto x = at::ones({4, 2});
    dist::all_reduce_(g, x);
    dist::all_gather(g, at::ones({3}), 0);
    auto y = at::ones({5});
    auto work = dist::all_reduce_async(g, y);
    dist::barrier(mesh->group(MeshDim::World));
    dist::wait_work(g, work, "all_reduce");
    dist::reduce_scatter(g, at::ones({4, 2}), 0);
    const auto e = rec->entries();
    ASSERT_EQ(e.size(), 5u);
    const std::vector<std::string> ops = {"all_reduce", "all_gather", "all_reduce", "barrier", "reduce_scatter"};
    const std::vector<uint64_t> seqs = {1, 2, 3, 1, 4};
    for (size_t i = 0; i < e.size(); ++i) {
      EXPECT_EQ(e[i].op, ops[i]) << i;
      EXPECT_EQ(e[i].seq, seqs[i]) << i;
      EXPECT_EQ(e[i].group, i == 3 ? MeshDim::World : MeshDim::DpShard) << i;
      EXPECT_GT(e[i].end_ns, 0) << i;  // the async one finished at its wait
      EXPECT_GE(e[i].end_ns, e[i].start_ns) << i;
    }
    EXPECT_EQ(e[0].bytes, 32u);
    EXPECT_EQ(e[2].bytes, 20u);
    EXPECT_EQ(rec->finished(), 5u);
    EXPECT_EQ(g.ops_issued(), 4u);
  });
}

TEST(FlightRecorder, ACollectiveThatTimesOutWritesTheRecord) {
  const auto dir = temp_dir("timeout");
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::thread> threads;
  std::string error;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      auto mesh = std::make_shared<dist::DeviceMesh>(sizes(1, 2), r);
      mesh->create_groups(store, std::chrono::milliseconds(1500), "127.0.0.1");
      auto rec = std::make_shared<dist::FlightRecorder>(16, r, 2);
      rec->set_dump_path(dir / dist::flight_file_name(r));
      mesh->set_flight_recorder(rec);
      auto& g = mesh->group(MeshDim::DpShard);
      auto x = at::ones({2});
      dist::all_reduce_(g, x);
      if (r == 1) {  // rank 1 never enters the second one, but keeps its connections up
        std::this_thread::sleep_for(std::chrono::seconds(4));
        return;
      }
      try {
        dist::all_reduce_(g, x);
      } catch (const std::exception& e) {
        error = e.what();
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_NE(error.find("timed out"), std::string::npos) << error;
  ASSERT_TRUE(fs::exists(dir / "flight_rank0.json"));
  EXPECT_FALSE(fs::exists(dir / "flight_rank1.json"));
  auto j = nlohmann::json::parse(util::read_file(dir / "flight_rank0.json"));
  EXPECT_EQ(j["reason"], "timeout in all_reduce on group dp_shard");
  ASSERT_EQ(j["entries"].size(), 2u);
  EXPECT_TRUE(j["entries"][0]["end"].is_number());
  EXPECT_EQ(j["entries"][1]["seq"], 2);
  EXPECT_EQ(j["entries"][1]["end"], "not finished");
  fs::remove_all(dir);
}

TEST(FlightRecorder, TheSkipHookSkipsExactlyTheNthAllReduce) {
  auto g = dist::Group::layout_only(MeshDim::Dp, {0, 1}, 0);
  EXPECT_FALSE(g->take_all_reduce_skip());  // no skip set: nothing counted
  g->skip_all_reduce_for_test(3);
  std::vector<bool> taken;
  for (int i = 0; i < 5; ++i) taken.push_back(g->take_all_reduce_skip());
  EXPECT_EQ(taken, (std::vector<bool>{false, false, true, false, false}));
}

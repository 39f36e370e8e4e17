// The diagnosis of hand-made flight records: a rank that never entered a collective (and where it
// is instead), a mismatched collective order, a rank that wrote no record, groups of one name kept
// apart, pairs that legitimately differ, and records read back from the recorder's JSON.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "dist/flight_recorder.h"
#include "tools/flight_diagnosis.h"
#include "util/check.h"

using namespace meshtrain;
using namespace meshtrain::tools;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

FlightOp op(const std::string& group, uint64_t seq, const std::string& name, std::vector<int64_t> shape,
            const std::string& dtype, double start, bool finished) {
  FlightOp o;
  o.group = group;
  o.seq = seq;
  o.op = name;
  o.shape = std::move(shape);
  o.dtype = dtype;
  o.start = start;
  if (finished) o.end = start + 0.01;
  return o;
}

FlightRecord record(int rank, int64_t step, std::vector<FlightGroup> groups, std::vector<FlightOp> ops,
                    double time = 110.0) {
  FlightRecord r;
  r.rank = rank;
  r.reason = "SIGUSR1";
  r.time = time;
  r.last_step = step;
  r.groups = std::move(groups);
  r.ops = std::move(ops);
  return r;
}

std::string joined(const std::vector<std::string>& lines) {
  std::string out;
  for (auto& l : lines) out += l + "\n";
  return out;
}

}  // namespace

TEST(FlightDiagnosis, ARankThatNeverEnteredACollectiveIsNamedWithWhereItWaits) {
  const std::vector<FlightRecord> records = {
      record(0, 5, {{"dp", {0, 1}, 41}, {"dp_shard_cp", {0, 1}, 11}},
             {op("dp_shard_cp", 11, "all_gather", {64}, "float32", 100.0, true),
              op("dp", 40, "all_reduce", {}, "int64", 100.5, true),
              op("dp", 41, "all_reduce", {}, "int64", 107.0, false)}),
      record(1, 5, {{"dp", {0, 1}, 40}, {"dp_shard_cp", {0, 1}, 12}},
             {op("dp_shard_cp", 11, "all_gather", {64}, "float32", 100.0, true),
              op("dp", 40, "all_reduce", {}, "int64", 100.5, true),
              op("dp_shard_cp", 12, "all_gather", {64}, "float32", 107.2, false)}),
  };
  const auto lines = diagnose_flights(records, {0, 1});
  ASSERT_GE(lines.size(), 4u) << joined(lines);
  // The oldest finding first: rank 0 entered dp seq 41 before rank 1 entered dp_shard_cp seq 12.
  EXPECT_EQ(lines[0],
            "group dp seq 41: rank 0 entered all_reduce [] int64; rank 1 never entered (its last on this group: "
            "seq 40 all_reduce; it is waiting in group dp_shard_cp seq 12 all_gather)");
  EXPECT_EQ(lines[1],
            "group dp_shard_cp seq 12: rank 1 entered all_gather [64] float32; rank 0 never entered (its last on "
            "this group: seq 11 all_gather; it is waiting in group dp seq 41 all_reduce)");
  EXPECT_THAT(lines, Contains("rank 0: last completed step 5; waiting in group dp seq 41 all_reduce [] int64 for "
                              "3.0 s (record written on SIGUSR1)"));
  EXPECT_THAT(lines, Contains(HasSubstr("rank 1: last completed step 5; waiting in group dp_shard_cp seq 12")));
  EXPECT_THAT(joined(lines), Not(HasSubstr("wrote no record")));
  EXPECT_THAT(joined(lines), Not(HasSubstr("mismatched")));
  EXPECT_TRUE(any_in_flight(records));
}

TEST(FlightDiagnosis, AMismatchedCollectiveOrderIsNamed) {
  const std::vector<FlightRecord> records = {
      record(0, 9, {{"ep", {0, 1}, 12}},
             {op("ep", 11, "all_to_all", {8, 16}, "float32", 100.0, true),
              op("ep", 12, "all_to_all", {8, 16}, "float32", 101.0, false)}),
      record(1, 9, {{"ep", {0, 1}, 12}},
             {op("ep", 11, "all_to_all", {6, 16}, "float32", 100.0, true),  // uneven splits are fine
              op("ep", 12, "all_reduce", {4}, "float32", 101.1, false)}),
  };
  const auto lines = diagnose_flights(records, {0, 1});
  EXPECT_THAT(lines, Contains("mismatched collective order: group ep seq 12: rank 0 all_to_all [8, 16] float32, "
                              "rank 1 all_reduce [4] float32"))
      << joined(lines);
  EXPECT_THAT(joined(lines), Not(HasSubstr("never entered")));
  EXPECT_THAT(joined(lines), Not(HasSubstr("seq 11")));
}

TEST(FlightDiagnosis, ADifferentShapeAtTheSameNumberIsAMismatch) {
  const std::vector<FlightRecord> records = {
      record(0, 2, {{"tp", {0, 1}, 3}}, {op("tp", 3, "all_reduce", {2, 8}, "float32", 100.0, false)}),
      record(1, 2, {{"tp", {0, 1}, 3}}, {op("tp", 3, "all_reduce", {2, 4}, "float32", 100.0, false)}),
  };
  EXPECT_THAT(diagnose_flights(records, {0, 1}),
              Contains("mismatched collective order: group tp seq 3: rank 0 all_reduce [2, 8] float32, rank 1 "
                       "all_reduce [2, 4] float32"));
}

TEST(FlightDiagnosis, ARankWithoutARecordIsNamed) {
  const std::vector<FlightRecord> records = {
      record(0, 3, {{"dp_shard", {0, 1}, 7}},
             {op("dp_shard", 6, "reduce_scatter", {128}, "float32", 100.0, true),
              op("dp_shard", 7, "all_gather", {256}, "float32", 101.0, false)}),
  };
  const auto lines = diagnose_flights(records, {0, 1});
  ASSERT_GE(lines.size(), 3u);
  EXPECT_EQ(lines[0], "rank 1 wrote no record (stopped, or hung outside a collective)");
  EXPECT_EQ(lines[1], "group dp_shard seq 7: rank 0 entered all_gather [256] float32; rank 1 wrote no record "
                      "(stopped, or hung outside a collective)");
  EXPECT_THAT(lines, Contains(HasSubstr("rank 0: last completed step 3; waiting in group dp_shard seq 7")));
}

TEST(FlightDiagnosis, GroupsOfOneNameWithDifferentMembersAreKeptApart) {
  auto healthy = [](int rank) {
    return record(rank, 4, {{"dp_shard", {rank / 2 * 2, rank / 2 * 2 + 1}, 9}},
                  {op("dp_shard", 9, "all_gather", {32}, "float32", 100.0, true)});
  };
  const std::vector<FlightRecord> records = {
      healthy(0), healthy(1),
      record(2, 4, {{"dp_shard", {2, 3}, 8}}, {op("dp_shard", 8, "all_gather", {32}, "float32", 99.0, true)}),
      record(3, 4, {{"dp_shard", {2, 3}, 9}}, {op("dp_shard", 9, "all_gather", {32}, "float32", 100.0, false)}),
  };
  const auto lines = diagnose_flights(records, {0, 1, 2, 3});
  EXPECT_EQ(lines[0], "group dp_shard seq 9: rank 3 entered all_gather [32] float32; rank 2 never entered (its last "
                      "on this group: seq 8 all_gather)")
      << joined(lines);
  EXPECT_THAT(joined(lines), Not(HasSubstr("ranks 0")));
}

TEST(FlightDiagnosis, MatchingRecordsAndPointToPointPairsFindNothing) {
  const std::vector<FlightRecord> records = {
      record(0, 8, {{"cp", {0, 1}, 2}},
             {op("cp", 1, "send", {4, 8}, "float32", 100.0, true), op("cp", 2, "recv", {4, 8}, "float32", 100.1, true)}),
      record(1, 8, {{"cp", {0, 1}, 2}},
             {op("cp", 1, "recv", {4, 8}, "float32", 100.0, true), op("cp", 2, "send", {4, 8}, "float32", 100.1, true)}),
  };
  const auto lines = diagnose_flights(records, {0, 1});
  EXPECT_EQ(lines, (std::vector<std::string>{"every rank entered the same collectives",
                                             "rank 0: last completed step 8; no collective in flight (record written "
                                             "on SIGUSR1)",
                                             "rank 1: last completed step 8; no collective in flight (record written "
                                             "on SIGUSR1)"}));
  EXPECT_FALSE(any_in_flight(records));
}

TEST(FlightDiagnosis, RecordsAreReadFromTheRecordersJson) {
  dist::FlightRecorder rec(8, 2, 4);
  rec.add_group(MeshDim::DpShard, {2, 3});
  rec.note_step(6);
  rec.finish(rec.begin(MeshDim::DpShard, 1, "all_gather", at::zeros({5, 2})));
  rec.begin(MeshDim::DpShard, 2, "reduce_scatter", at::zeros({10}, at::kDouble));
  const auto r = parse_flight_record(rec.to_json("timeout in reduce_scatter on group dp_shard"));
  EXPECT_EQ(r.rank, 2);
  EXPECT_EQ(r.last_step, 6);
  EXPECT_EQ(r.reason, "timeout in reduce_scatter on group dp_shard");
  ASSERT_EQ(r.groups.size(), 1u);
  EXPECT_EQ(r.groups[0].name, "dp_shard");
  EXPECT_EQ(r.groups[0].ranks, (std::vector<int>{2, 3}));
  EXPECT_EQ(r.groups[0].issued, 2u);
  ASSERT_EQ(r.ops.size(), 2u);
  EXPECT_EQ(r.ops[0].shape, (std::vector<int64_t>{5, 2}));
  EXPECT_TRUE(r.ops[0].end.has_value());
  EXPECT_EQ(r.ops[1].op, "reduce_scatter");
  EXPECT_EQ(r.ops[1].dtype, "float64");
  EXPECT_EQ(r.ops[1].bytes, 80u);
  EXPECT_FALSE(r.ops[1].end.has_value());
  try {
    parse_flight_record(nlohmann::json{{"rank", 1}});
    FAIL() << "a record without its fields was accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("not a flight record"));
  }
}

// The flight recorder end to end under `meshtrain launch -n 2`: a rank that skips one all-reduce
// (the test-only hook) is named with the group, the sequence number and the op after the time-out;
// a rank stopped with SIGSTOP is named by --dump_on_stall, which then ends the job; bad values are
// one-line usage errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <regex>
#include <thread>

#include "support/run_command.h"
#include "util/files.h"

using namespace meshtrain::testing;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

const std::string kTiny = " --config_name " + kSource + "/configs/llama-tiny --data " + kSource +
                          "/data/corpus.txt --seq_len 32 --per_device_train_batch_size 2 --logging_steps 1"
                          " --dp_shard_size 2 --save_steps 0";

class Flight : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mt_flight_cli_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "flight");
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

// The pid of the process whose environment holds both entries (a rank of this test's launch), or -1.
pid_t find_process_with(const std::string& a, const std::string& b) {
  for (auto& e : fs::directory_iterator("/proc")) {
    const auto name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const auto env = slurp(e.path() / "environ");
    if (env.find('\0' + a + '\0') != std::string::npos && env.find('\0' + b + '\0') != std::string::npos)
      return std::stoi(name);
  }
  return -1;
}

}  // namespace

TEST_F(Flight, ARankThatSkipsAnAllReduceIsNamedWithTheGroupSeqAndOp) {
  const auto start = Clock::now();
  auto r = run_command("MESHTRAIN_FLIGHT_DIR=" + (dir_ / "flight").string() + " MESHTRAIN_TEST_SKIP_ALL_REDUCE=1:dp:3 " +
                       kBin + " launch -n 2 --timeout 4 -- train" + kTiny + " --max_steps 20 --output_dir " +
                       (dir_ / "run").string());
  EXPECT_LT(seconds_since(start), 40);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  // Rank 1 skipped the target count of step 3 (one all-reduce on dp per step) and went on to the
  // next collective on another group, where rank 0 never came.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.err, m, std::regex("meshtrain launch: group dp seq ([0-9]+): rank 0 entered "
                                                     "all_reduce \\[1\\] int64; rank 1 never entered \\(its last on "
                                                     "this group: seq ([0-9]+) all_reduce; it is waiting in group "
                                                     "(\\w+) seq [0-9]+ (\\w+)\\)")))
      << r.err;
  const int seq = std::stoi(m[1]);
  EXPECT_EQ(std::stoi(m[2]), seq - 1);
  EXPECT_NE(m[3], "dp");
  EXPECT_THAT(r.err, HasSubstr("meshtrain launch: rank 0: last completed step 2; waiting in group dp seq " +
                               std::to_string(seq) + " all_reduce"));
  EXPECT_THAT(r.err, HasSubstr("meshtrain launch: rank 1: last completed step 2; waiting in group " + m[3].str()));
  // Rank 0's own record agrees: its third all-reduce on dp is that seq, not finished.
  auto rank0 = nlohmann::json::parse(meshtrain::util::read_file(dir_ / "flight/flight_rank0.json"));
  int all_reduces = 0;
  nlohmann::json stuck;
  for (auto& e : rank0["entries"])
    if (e["group"] == "dp" && e["op"] == "all_reduce" && e["seq"].get<int>() <= seq) {
      ++all_reduces;
      if (e["seq"] == seq) stuck = e;
    }
  EXPECT_EQ(all_reduces, 3);
  EXPECT_EQ(stuck["end"], "not finished");
  EXPECT_TRUE(fs::exists(dir_ / "flight/flight_rank1.json"));
}

TEST_F(Flight, DumpOnStallNamesAStoppedRankAndEndsTheJob) {
  const auto log = dir_ / "launch.log", rc = dir_ / "launch.rc";
  const std::string flight = "MESHTRAIN_FLIGHT_DIR=" + (dir_ / "flight").string();
  std::system(("(" + flight + " " + kBin + " launch -n 2 --timeout 120 --dump_on_stall 2 -- train" + kTiny +
               " --max_steps 1000000 --output_dir " + (dir_ / "run").string() + "; echo $? > " + rc.string() +
               ") > " + log.string() + " 2>&1 &")
                  .c_str());
  const auto start = Clock::now();
  while (!std::regex_search(slurp(log), std::regex("step 3 ")) && seconds_since(start) < 60)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const pid_t rank1 = find_process_with("RANK=1", flight);
  ASSERT_GT(rank1, 0) << slurp(log);
  ASSERT_EQ(::kill(rank1, SIGSTOP), 0);
  const auto stopped = Clock::now();
  while (!fs::exists(rc) && seconds_since(stopped) < 60) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const double took = seconds_since(stopped);
  ::kill(rank1, SIGCONT);  // nothing may be left behind, whatever happened
  ::kill(rank1, SIGKILL);
  const auto out = slurp(log);
  ASSERT_TRUE(fs::exists(rc)) << out;
  EXPECT_LT(took, 2 + 3 + 10);  // the stall, the wait for records, slack
  EXPECT_EQ(std::stoi(slurp(rc)), 1) << out;
  EXPECT_THAT(out, HasSubstr("meshtrain launch: no rank made progress for 2 s; asking every rank for its flight "
                             "record (SIGUSR1)"));
  EXPECT_THAT(out, HasSubstr("meshtrain launch: rank 1 wrote no record (stopped, or hung outside a collective)"));
  EXPECT_TRUE(std::regex_search(out, std::regex("meshtrain launch: group \\w+ seq [0-9]+: rank 0 entered \\w+ "
                                                "\\[[0-9, ]*\\] \\w+; rank 1 wrote no record")))
      << out;
  EXPECT_TRUE(std::regex_search(out, std::regex("meshtrain launch: rank 0: last completed step [0-9]+; waiting in "
                                                "group \\w+ seq [0-9]+ .* \\(record written on SIGUSR1\\)")))
      << out;
  EXPECT_THAT(out, HasSubstr("meshtrain launch: no rank made progress for 2 s (--dump_on_stall); stopped the ranks"));
  EXPECT_TRUE(fs::exists(dir_ / "flight/flight_rank0.json"));
  const auto gone = Clock::now();
  while (alive(rank1) && seconds_since(gone) < 10) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(alive(rank1));
}

TEST_F(Flight, BadValuesAreOneLineUsageErrors) {
  auto r = run_command(kBin + " train --config_name " + kSource + "/configs/llama-tiny --data " + kSource +
                       "/data/corpus.txt --seq_len 32 --max_steps 1 --flight_recorder_size -1 --output_dir " +
                       (dir_ / "run").string());
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err, "--flight_recorder_size must be in [0, 10000000] (0 turns the recorder off), got -1\n");
  r = run_command(kBin + " launch -n 2 --dump_on_stall -1 -- /bin/true");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err, "meshtrain launch: --dump_on_stall must be in [0, 86400], got -1\n");
  r = run_command("MESHTRAIN_TEST_SKIP_ALL_REDUCE=1:dq:3 " + kBin + " train --config_name " + kSource +
                  "/configs/llama-tiny --data " + kSource + "/data/corpus.txt --seq_len 32 --max_steps 1 --output_dir " +
                  (dir_ / "run").string());
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err, "MESHTRAIN_TEST_SKIP_ALL_REDUCE: no group named 'dq'\n");
}

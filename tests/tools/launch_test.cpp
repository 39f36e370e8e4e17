// meshtrain launch as torchrun's stand-in: the environment each rank gets, the output relay
// (rank 0 unchanged, the others "[rank R] "-prefixed), one failing rank stopping all of them,
// signals forwarded, no process left behind, and one-line usage errors with exit code 2.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "support/run_command.h"

using namespace meshtrain::testing;
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

fs::path temp_file(const std::string& name) {
  auto p = fs::temp_directory_path() / ("mt_launch_" + std::to_string(::getpid()) + "_" + name);
  fs::remove(p);
  return p;
}

std::vector<pid_t> read_pids(const fs::path& file) {
  std::vector<pid_t> pids;
  std::ifstream in(file);
  for (pid_t p; in >> p;) pids.push_back(p);
  return pids;
}

// True once none of the pids is alive (reparented orphans may take a moment to be reaped).
bool all_gone(const std::vector<pid_t>& pids) {
  const auto start = Clock::now();
  while (seconds_since(start) < 20.0) {
    if (std::none_of(pids.begin(), pids.end(), alive)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

int count_lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

}  // namespace

TEST(Launch, GivesEachRankTheTorchrunEnvironment) {
  auto r = run_command(kBin +
                       " launch -n 3 -- /bin/sh -c 'echo \"r=$RANK w=$WORLD_SIZE l=$LOCAL_RANK "
                       "lw=$LOCAL_WORLD_SIZE g=$GROUP_RANK a=$MASTER_ADDR p=$MASTER_PORT t=$MESHTRAIN_TIMEOUT_S\"'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(count_lines(r.out), 3) << r.out;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("(^|\n)r=0 w=3 l=0 lw=3 g=0 a=127\\.0\\.0\\.1 p=([0-9]+) t=300\n")))
      << r.out;
  const std::string port = m[2];
  EXPECT_GT(std::stoi(port), 0);
  for (int rank : {1, 2}) {
    const std::string line = "[rank " + std::to_string(rank) + "] r=" + std::to_string(rank) + " w=3 l=" +
                             std::to_string(rank) + " lw=3 g=0 a=127.0.0.1 p=" + port + " t=300\n";
    EXPECT_NE(r.out.find(line), std::string::npos) << line << "not in\n" << r.out;
  }
}

TEST(Launch, NodeRankOffsetsTheRanks) {
  auto r = run_command(kBin +
                       " launch --nnodes 2 --node_rank 1 -n 2 --master_addr 10.0.0.7 --master_port 29999 --timeout 42"
                       " -- /bin/sh -c 'echo \"r=$RANK w=$WORLD_SIZE l=$LOCAL_RANK g=$GROUP_RANK a=$MASTER_ADDR "
                       "p=$MASTER_PORT t=$MESHTRAIN_TIMEOUT_S\"'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // No global rank 0 on this node: both ranks are prefixed.
  EXPECT_NE(r.out.find("[rank 2] r=2 w=4 l=0 g=1 a=10.0.0.7 p=29999 t=42\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[rank 3] r=3 w=4 l=1 g=1 a=10.0.0.7 p=29999 t=42\n"), std::string::npos) << r.out;
}

TEST(Launch, RelaysRankZeroUnchangedAndPrefixesTheOthersByLine) {
  auto r = run_command(kBin +
                       " launch -n 2 -- /bin/sh -c 'if [ \"$RANK\" = 0 ]; then printf \"a\\rb\\rc\"; "
                       "printf \"warn\\n\" >&2; else printf \"x\\ny\"; printf \"e\\n\" >&2; fi'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("a\rb\rc"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[rank 1] x\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[rank 1] y\n"), std::string::npos) << r.out;  // partial line flushed at exit
  EXPECT_NE(r.err.find("[rank 1] e\n"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("warn\n"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("[rank 0]"), std::string::npos) << r.err;
}

TEST(Launch, AFailingRankStopsTheOthersAndSetsTheExitCode) {
  const auto pids = temp_file("fail.pids");
  const auto start = Clock::now();
  // Ranks 0 and 2 leave a grandchild (the background sleep) that must be stopped too; rank 0
  // ignores SIGTERM, so it takes the SIGKILL after the 5 s grace period. The bounds are loose
  // (a loaded machine is slow) but far from the sleep's 120 s that an unstopped rank would take.
  auto r = run_command(kBin + " launch -n 3 -- /bin/sh -c 'if [ \"$RANK\" = 1 ]; then sleep 0.5; exit 3; fi; "
                              "if [ \"$RANK\" = 0 ]; then trap \"\" TERM; fi; sleep 120 & echo $! >> " +
                       pids.string() + "; echo $$ >> " + pids.string() + "; wait'");
  const double elapsed = seconds_since(start);
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_GT(elapsed, 5.0);
  EXPECT_LT(elapsed, 60.0);
  EXPECT_NE(r.err.find("meshtrain launch: rank 1 exited with code 3\n"), std::string::npos) << r.err;
  auto started = read_pids(pids);
  EXPECT_EQ(started.size(), 4u);
  EXPECT_TRUE(all_gone(started));
  fs::remove(pids);
}

TEST(Launch, ARankKilledBySignalExitsWith128PlusTheSignal) {
  auto r = run_command(kBin + " launch -n 2 -- /bin/sh -c 'if [ \"$RANK\" = 1 ]; then kill -9 $$; fi; sleep 120'");
  EXPECT_EQ(r.exit_code, 128 + 9) << r.err;
  EXPECT_NE(r.err.find("meshtrain launch: rank 1 was killed by signal 9"), std::string::npos) << r.err;
}

// The launcher gets SIGTERM (forwarded, exit 143) or SIGKILL (the ranks die with it).
void expect_ranks_stop_with_launcher(int sig) {
  const auto pids = temp_file("sig" + std::to_string(sig) + ".pids");
  const std::string script = "echo $$ >> " + pids.string() + "; exec sleep 120";
  const auto start = Clock::now();
  const pid_t launcher = ::fork();
  ASSERT_GE(launcher, 0);
  if (launcher == 0) {
    const int null_fd = ::open("/dev/null", O_WRONLY);
    ::dup2(null_fd, STDOUT_FILENO);
    ::dup2(null_fd, STDERR_FILENO);
    ::execl(kBin.c_str(), kBin.c_str(), "launch", "-n", "2", "--", "/bin/sh", "-c", script.c_str(), nullptr);
    ::_exit(127);
  }
  while (read_pids(pids).size() < 2 && seconds_since(start) < 60)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const auto ranks = read_pids(pids);
  EXPECT_EQ(ranks.size(), 2u);
  ::kill(launcher, sig);
  int status = 0;
  ASSERT_EQ(::waitpid(launcher, &status, 0), launcher);
  EXPECT_LT(seconds_since(start), 90.0);  // well before the ranks' own end at 120 s
  if (sig == SIGKILL) {
    EXPECT_TRUE(WIFSIGNALED(status));
  } else {
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 128 + sig);
  }
  EXPECT_TRUE(all_gone(ranks));
  fs::remove(pids);
}

TEST(Launch, SigtermToTheLauncherIsForwardedToTheRanks) { expect_ranks_stop_with_launcher(SIGTERM); }

TEST(Launch, RanksDieWithAKilledLauncher) { expect_ranks_stop_with_launcher(SIGKILL); }

TEST(Launch, RunsAMeshtrainCommandInEveryRank) {
  auto r = run_command(kBin + " launch -n 2 -- info " + kSource + "/configs/llama-tiny");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("(^|\n)parameters: ([0-9]+)\n"))) << r.out;
  EXPECT_NE(r.out.find("[rank 1] parameters: " + m[2].str() + "\n"), std::string::npos) << r.out;
}

TEST(Launch, PassesOnTheCommandsUsageError) {
  auto r = run_command(kBin + " launch -n 2 -- frobnicate");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("unknown command 'frobnicate'"), std::string::npos) << r.err;
  EXPECT_TRUE(r.err.find("meshtrain launch: rank 0 exited with code 2\n") != std::string::npos ||
              r.err.find("meshtrain launch: rank 1 exited with code 2\n") != std::string::npos)
      << r.err;
}

TEST(Launch, HelpPrintsUsage) {
  auto r = run_command(kBin + " launch --help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("usage: meshtrain launch -n N"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--master_port"), std::string::npos) << r.out;
}

TEST(Launch, BadFlagsAreOneLineUsageErrors) {
  // Each case starts the binary (~0.5 s of libtorch loading): the generic flag errors are Flags' tests.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"launch -- /bin/true", "-n N (--nproc_per_node) is required"},
      {"launch -n 0 -- /bin/true", "-n must be in [1, 1024], got 0"},
      {"launch -n 2", "nothing to run"},
      {"launch -n 2 train", "unexpected argument 'train'"},
      {"launch -n 2 --nnodes 2 --node_rank 2 --master_port 29999 -- /bin/true",
       "--node_rank must be in [0, nnodes=2), got 2"},
      {"launch -n 2 --nnodes 2 --node_rank 1 -- /bin/true", "--master_port is required with --nnodes 2"},
      {"launch -n 2 --master_port 70000 -- /bin/true", "--master_port must be in [1, 65535], got 70000"},
  };
  for (auto& [args, phrase] : cases) {
    auto r = run_command(kBin + " " + args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.err;
    EXPECT_EQ(count_lines(r.err), 1) << args << "\n" << r.err;
    EXPECT_NE(r.err.find(phrase), std::string::npos) << args << "\n" << r.err;
  }
}

TEST(Launch, AMissingProgramIsOneLineError) {
  auto r = run_command(kBin + " launch -n 2 -- /nonexistent/prog");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("cannot execute '/nonexistent/prog'"), std::string::npos) << r.err;
}

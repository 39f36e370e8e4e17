// Runs that fail as an operator needs them to: non-finite flags refused, a diverging run stopped
// before it ruins the weights, bad token ids named, the output directory checked, locked and
// tidied, the first failing rank blamed, a stopped rank named, the store bound to MASTER_ADDR,
// and (where the machine allows network namespaces) two hosts over a veth pair.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "data/test_files.h"
#include "support/run_command.h"

using namespace meshtrain::testing;
using meshtrain::data::testing::npy_of;
using meshtrain::data::testing::write_bytes;
using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

const std::string kTiny = " --config_name " + kSource + "/configs/llama-tiny --data " + kSource +
                          "/data/corpus.txt --seq_len 32 --per_device_train_batch_size 2 --logging_steps 1";

class Faults : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("mt_faults_" + std::to_string(::getpid()) + "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

// Whether this process may create mount namespaces (root with CAP_SYS_ADMIN).
bool can_mount() { return ::geteuid() == 0 && std::system("unshare -m true > /dev/null 2>&1") == 0; }

// The pid in the first line of a file once it holds one (a background command's $!), else -1.
pid_t wait_for_pid(const fs::path& file, const std::regex& ready, const fs::path& ready_file) {
  const auto start = Clock::now();
  while (seconds_since(start) < 60) {
    if (fs::exists(file) && fs::exists(ready_file) && std::regex_search(slurp(ready_file), ready))
      return std::stoi(slurp(file));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return -1;
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// The hex IPv4 addresses of the sockets listening on `port` (/proc/net/tcp).
std::vector<std::string> listening_addresses(int port) {
  std::ifstream in("/proc/net/tcp");
  std::vector<std::string> out;
  std::string line;
  std::getline(in, line);
  char hex_port[8];
  std::snprintf(hex_port, sizeof hex_port, "%04X", port);
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state;
    fields >> slot >> local >> remote >> state;
    if (state == "0A" && local.substr(local.find(':') + 1) == hex_port) out.push_back(local.substr(0, local.find(':')));
  }
  return out;
}

}  // namespace

TEST_F(Faults, NonFiniteFlagsAreUsageErrors) {
  for (std::string flag : {"--learning_rate nan", "--learning_rate inf", "--weight_decay nan", "--adam_beta1 -inf",
                           "--adam_epsilon nan", "--max_grad_norm inf", "--timeout nan"}) {
    auto r = run_command(kBin + " train " + flag + " --output_dir " + (dir_ / "run").string());
    EXPECT_EQ(r.exit_code, 2) << flag << "\n" << r.err;
    EXPECT_THAT(r.err, HasSubstr("expects a finite number")) << flag;
  }
  auto r = run_command("MESHTRAIN_TIMEOUT_S=nan " + kBin + " train" + kTiny + " --max_steps 1 --output_dir " +
                       (dir_ / "run").string());
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--timeout (or MESHTRAIN_TIMEOUT_S) must be a positive number of seconds, got nan"));
  EXPECT_FALSE(fs::exists(dir_ / "run"));
}

TEST_F(Faults, ADivergingRunStopsBeforeTheUpdateAndKeepsTheLastGoodCheckpoint) {
  // At a learning rate of 1e30 the first update leaves the weights at ~1e30: step 2's loss is not finite.
  auto r = run_command(kBin + " train" + kTiny + " --max_steps 6 --save_steps 1 --warmup_steps 0 --learning_rate 1e30 "
                       "--output_dir " + dir_.string());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("step 2: the loss is nan"));
  EXPECT_THAT(r.err, HasSubstr("stopped before the optimizer step. The last good checkpoint is " +
                               (dir_ / "checkpoint-1").string()));
  EXPECT_TRUE(fs::exists(dir_ / "checkpoint-1/trainer_state.json"));
  EXPECT_FALSE(fs::exists(dir_ / "checkpoint-2"));
  EXPECT_FALSE(fs::exists(dir_ / "model.safetensors"));  // no NaN model exported
}

TEST_F(Faults, NegativeTokenIdsAreNamedByTrainAndEval) {
  const auto npy = write_bytes(dir_ / "ids.npy", npy_of("<i8", {1, 2, 3, -3, 4, 5, 6, 7, 8, 9, 10, 11}));
  auto r = run_command(kBin + " train --config_name " + kSource + "/configs/llama-tiny --data " + npy.string() +
                       " --seq_len 4 --max_steps 1 --output_dir " + (dir_ / "run").string());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("the data holds the negative token id -3"));
  EXPECT_THAT(r.err, Not(HasSubstr("index out of range")));
  ASSERT_EQ(run_command(kBin + " train" + kTiny + " --max_steps 1 --output_dir " + (dir_ / "model").string()).exit_code, 0);
  r = run_command(kBin + " eval --model_name_or_path " + (dir_ / "model").string() + " --data " + npy.string() +
                  " --seq_len 4");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("the data holds the negative token id -3"));
}

TEST_F(Faults, ASecondRunOnTheSameOutputDirectoryStopsAtOnce) {
  const auto pid_file = dir_ / "first.pid", log = dir_ / "first.log";
  std::system((kBin + " train" + kTiny + " --max_steps 1000000 --logging_steps 1000000 --output_dir " +
               (dir_ / "run").string() + " > " + log.string() + " 2>&1 & echo $! > " + pid_file.string())
                  .c_str());
  const pid_t first = wait_for_pid(pid_file, std::regex("training"), log);
  ASSERT_GT(first, 0) << slurp(log);
  auto r = run_command(kBin + " train" + kTiny + " --max_steps 2 --output_dir " + (dir_ / "run").string());
  ::kill(first, SIGKILL);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("is in use by another run (pid " + std::to_string(first) + " on host "));
  EXPECT_FALSE(fs::exists(dir_ / "run/model.safetensors"));
  // The lock goes with its holder.
  const auto start = Clock::now();
  while (alive(first) && seconds_since(start) < 10) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  r = run_command(kBin + " train" + kTiny + " --max_steps 2 --output_dir " + (dir_ / "run").string());
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(Faults, AnUnwritableOutputDirectoryFailsBeforeTheFirstStep) {
  std::string command = kBin + " train" + kTiny + " --max_steps 2 --output_dir " + (dir_ / "ro/run").string();
  fs::create_directories(dir_ / "ro");
  if (can_mount()) {  // root ignores permission bits; a read-only mount it cannot ignore
    command = "unshare -m sh -c 'mount -t tmpfs -o ro none " + (dir_ / "ro").string() + " && " + command + "'";
  } else {
    fs::permissions(dir_ / "ro", fs::perms::owner_read | fs::perms::owner_exec);
    std::error_code writable;
    if (fs::create_directory(dir_ / "ro/probe", writable)) {  // root that may not mount (a container)
      fs::permissions(dir_ / "ro", fs::perms::owner_all);
      GTEST_SKIP() << "permission bits do not bind this user, and it cannot mount a read-only tmpfs";
    }
  }
  auto r = run_command(command);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--output_dir \"" + (dir_ / "ro/run").string() + "\" cannot be created: E"));
  EXPECT_THAT(r.err, Not(HasSubstr("step 1")));
  fs::permissions(dir_ / "ro", fs::perms::owner_all);
}

TEST_F(Faults, AFullDiskIsNamed) {
  if (!can_mount()) GTEST_SKIP() << "needs root to mount a small tmpfs (util's /dev/full test covers the message)";
  const auto small = dir_ / "small";
  fs::create_directories(small);
  auto r = run_command("unshare -m sh -c 'mount -t tmpfs -o size=160k none " + small.string() + " && " + kBin +
                       " train" + kTiny + " --max_steps 4 --save_steps 2 --output_dir " + small.string() + "/run'");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("ENOSPC: No space left on device"));
}

TEST_F(Faults, ResumeTidiesWhatAnInterruptedRunLeft) {
  const std::string run = kBin + " train" + kTiny + " --max_steps 6 --save_steps 2 --output_dir " + dir_.string();
  ASSERT_EQ(run_command(run).exit_code, 0);
  // As if killed: while saving checkpoint-4 again (the old one moved aside, the new one unfinished),
  // after a copy of checkpoint-4 cut short, and after logging step 5 twice.
  fs::rename(dir_ / "checkpoint-2", dir_ / ".checkpoint-2.old");
  fs::create_directories(dir_ / ".checkpoint-6.tmp");
  fs::remove(dir_ / "checkpoint-4/shards-rank00000.safetensors");
  auto r = run_command(run + " --resume_from_checkpoint latest");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("restoring " + (dir_ / "checkpoint-2").string()));
  EXPECT_THAT(r.err, HasSubstr("removing " + (dir_ / ".checkpoint-6.tmp").string()));
  EXPECT_THAT(r.err, HasSubstr("warning: skipping the incomplete checkpoint " + (dir_ / "checkpoint-4").string() +
                               " (no shards-rank00000.safetensors)"));
  EXPECT_THAT(r.err, HasSubstr("resumed from " + (dir_ / "checkpoint-2").string() + " at step 2"));
  EXPECT_FALSE(fs::exists(dir_ / ".checkpoint-6.tmp"));
  // One curve: steps 1-2 of the first run, then 3-6 of the resumed one, each once.
  auto rows = metrics_of(dir_);
  ASSERT_EQ(rows.size(), 6u);
  for (size_t i = 0; i < rows.size(); ++i) EXPECT_EQ(rows[i]["step"], static_cast<int>(i + 1));
}

TEST_F(Faults, ACorruptedCheckpointFileIsNamed) {
  const std::string run = kBin + " train" + kTiny + " --max_steps 4 --save_steps 2 --output_dir " + dir_.string();
  ASSERT_EQ(run_command(run).exit_code, 0);
  const auto shards = dir_ / "checkpoint-2/shards-rank00000.safetensors";
  {
    std::fstream f(shards, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(shards) - 5));
    f.put('\x7f');  // one byte of the last tensor's data: the header still parses
  }
  auto r = run_command(run + " --resume_from_checkpoint " + (dir_ / "checkpoint-2").string());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("\"" + shards.string() + "\" is corrupted: its checksum is fnv4x64:"));
  EXPECT_THAT(r.err, HasSubstr("but the manifest recorded fnv4x64:"));
}

TEST_F(Faults, SaveTotalLimitKeepsTheNewestCheckpoints) {
  auto r = run_command(kBin + " train" + kTiny + " --max_steps 6 --save_steps 1 --save_total_limit 2 --output_dir " +
                       dir_.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> kept;
  for (auto& e : fs::directory_iterator(dir_))
    if (e.path().filename().string().starts_with("checkpoint-")) kept.push_back(e.path().filename().string());
  std::sort(kept.begin(), kept.end());
  EXPECT_EQ(kept, (std::vector<std::string>{"checkpoint-4", "checkpoint-5"}));
  EXPECT_EQ(run_command(kBin + " train --save_total_limit -1").exit_code, 2);
}

TEST_F(Faults, TheLauncherBlamesTheRankThatFailedFirst) {
  const std::string run = kBin + " launch -n 2 -- train" + kTiny + " --dp_shard_size 2 --max_steps 4 --save_steps 2 "
                          "--output_dir " + dir_.string();
  ASSERT_EQ(run_command(run).exit_code, 0);
  fs::remove(dir_ / "checkpoint-2/rng-rank00001.safetensors");  // only rank 1 needs it
  auto r = run_command(run + " --resume_from_checkpoint " + (dir_ / "checkpoint-2").string());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("meshtrain launch: rank 1 failed: \"" +
                               (dir_ / "checkpoint-2/rng-rank00001.safetensors").string() + "\" is missing"));
  EXPECT_THAT(r.err, Not(HasSubstr("frame #")));
}

TEST_F(Faults, AStoppedRankIsNamedWithinTheTimeoutAndTheStoreListensOnMasterAddrOnly) {
  const auto pid_file = dir_ / "launch.pid", log = dir_ / "launch.log";
  const auto start = Clock::now();
  const int port = free_port();
  std::system((kBin + " launch -n 2 --timeout 5 --master_port " + std::to_string(port) + " -- train" + kTiny + " --dp_shard_size 2 --max_steps 1000000 "
               "--logging_steps 1 --output_dir " + (dir_ / "run").string() + " > " + log.string() + " 2>&1 & echo $! > " +
               pid_file.string()).c_str());
  const pid_t launcher = wait_for_pid(pid_file, std::regex("step 2 "), log);
  ASSERT_GT(launcher, 0) << slurp(log);
  // Rank 1: the child of the launcher whose environment says RANK=1.
  pid_t rank1 = -1;
  for (auto& e : fs::directory_iterator("/proc")) {
    const auto name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(e.path() / "stat");
    std::string text;
    std::getline(stat, text);
    const auto fields = text.substr(text.rfind(')') + 2);
    if (std::stoi(fields.substr(fields.find(' ') + 1)) != launcher) continue;
    if (slurp(e.path() / "environ").find(std::string("\0RANK=1\0", 8)) != std::string::npos) rank1 = std::stoi(name);
  }
  ASSERT_GT(rank1, 0);
  EXPECT_EQ(listening_addresses(port), std::vector<std::string>{"0100007F"});  // 127.0.0.1, not 0.0.0.0
  ::kill(rank1, SIGSTOP);
  const auto stopped = Clock::now();
  while (alive(launcher) && seconds_since(start) < 120) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_LT(seconds_since(stopped), 5 + 15);
  const auto out = slurp(log);
  EXPECT_THAT(out, HasSubstr("timed out after 5 s; operation #"));
  EXPECT_THAT(out, HasSubstr("rank(s) 1 did not answer (stopped, or stuck outside this group)"));
  EXPECT_THAT(out, HasSubstr("meshtrain launch: rank 0 failed:"));
  EXPECT_THAT(out, Not(HasSubstr("frame #")));
}

TEST_F(Faults, SigtermCheckpointsAndTheResumedRunMatchesAnUninterruptedOne) {
  const std::string common = " train" + kTiny + " --save_steps 0 --max_steps 150 --output_dir ";
  ASSERT_EQ(run_command(kBin + common + (dir_ / "full").string()).exit_code, 0);
  for (std::string launcher : {std::string(), std::string(" launch -n 2 --preemption_grace 30 --")}) {
    const auto run = dir_ / (launcher.empty() ? "single" : "launched");
    const fs::path pid_file = run.string() + ".pid", log = run.string() + ".log";
    const std::string layout = launcher.empty() ? "" : " --dp_shard_size 2 --per_device_train_batch_size 1";
    std::system((kBin + launcher + common + run.string() + layout + " > " + log.string() +
                 " 2>&1 & echo $! > " + pid_file.string()).c_str());
    const pid_t pid = wait_for_pid(pid_file, std::regex("step 3 "), log);
    ASSERT_GT(pid, 0) << slurp(log);
    ::kill(pid, SIGTERM);
    const auto start = Clock::now();
    while (alive(pid) && seconds_since(start) < 60) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_LT(seconds_since(start), 30) << launcher;
    const auto out = slurp(log);
    ASSERT_THAT(out, HasSubstr("SIGTERM: saved " + run.string() + "/checkpoint-")) << out;
    if (!launcher.empty()) {
      EXPECT_THAT(out, HasSubstr("SIGTERM: every rank saved a checkpoint and stopped"));
    }
    EXPECT_FALSE(fs::exists(run / "model.safetensors"));
    // The stop came after some step k >= 3; resuming gives the uninterrupted curve.
    auto r = run_command(kBin + launcher + common + run.string() + layout + " --resume_from_checkpoint latest");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto full = metrics_of(dir_ / "full"), resumed = metrics_of(run);
    ASSERT_EQ(resumed.size(), full.size()) << launcher;
    for (size_t i = 0; i < full.size(); ++i)
      EXPECT_NEAR(resumed[i]["loss"].get<double>(), full[i]["loss"].get<double>(), 1e-6 * full[i]["loss"].get<double>())
          << launcher << " step " << i + 1;
  }
}

TEST_F(Faults, MaxRestartsRestartsTheRanksAndTheCurveIsTheUninterruptedOne) {
  const std::string train = " train" + kTiny + " --dp_shard_size 2 --per_device_train_batch_size 1 --max_steps 12 "
                            "--save_steps 3 --warmup_steps 0 --output_dir ";
  ASSERT_EQ(run_command(kBin + " launch -n 2 --" + train + (dir_ / "full").string()).exit_code, 0);
  // Rank 1 is killed once step 5 is logged; the relaunched ranks resume from checkpoint-3.
  const auto log = dir_ / "run.log", pid_file = dir_ / "run.pid";
  std::system((kBin + " launch -n 2 --max_restarts 1 --" + train + (dir_ / "run").string() + " > " + log.string() +
               " 2>&1 & echo $! > " + pid_file.string()).c_str());
  const pid_t launcher = wait_for_pid(pid_file, std::regex("step 5 "), log);
  ASSERT_GT(launcher, 0) << slurp(log);
  run_command("for p in $(pgrep -P " + std::to_string(launcher) + "); do tr '\\0' '\\n' < /proc/$p/environ | "
              "grep -qx RANK=1 && kill -9 $p; done");
  const auto start = Clock::now();
  while (alive(launcher) && seconds_since(start) < 120) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const auto out = slurp(log);
  EXPECT_THAT(out, HasSubstr("meshtrain launch: restarting the ranks (restart 1 of 1)"));
  EXPECT_THAT(out, HasSubstr("resumed from " + (dir_ / "run/checkpoint-").string()));
  ASSERT_TRUE(fs::exists(dir_ / "run/model.safetensors")) << out;
  const auto full = metrics_of(dir_ / "full"), restarted = metrics_of(dir_ / "run");
  ASSERT_EQ(restarted.size(), full.size());
  for (size_t i = 0; i < full.size(); ++i)
    EXPECT_EQ(restarted[i]["loss"].get<double>(), full[i]["loss"].get<double>()) << "step " << i + 1;
}

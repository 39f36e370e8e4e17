// Two hosts on one machine: network namespaces joined by a veth pair (10.77.0.1 and 10.77.0.2)
// whose hostname resolves to neither (it names loopback, as in many containers). The ranks must
// still find each other, honour GLOO_SOCKET_IFNAME, and end within --timeout when a host never
// comes or a rank dies. Needs root and `ip netns`; skipped with the reason otherwise.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <future>
#include <thread>

#include "support/run_command.h"

using namespace meshtrain::testing;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

const std::string kTiny = " --config_name " + kSource + "/configs/llama-tiny --data " + kSource +
                          "/data/corpus.txt --seq_len 32 --logging_steps 1";

class TwoHosts : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string id = std::to_string(::getpid() % 100000);
    ns_[0] = "mtA" + id;
    ns_[1] = "mtB" + id;
    veth_[0] = "mtv" + id + "a";
    veth_[1] = "mtv" + id + "b";
    const std::string setup =
        "ip netns add " + ns_[0] + " && ip netns add " + ns_[1] + " && ip link add " + veth_[0] +
        " type veth peer name " + veth_[1] + " && ip link set " + veth_[0] + " netns " + ns_[0] + " && ip link set " +
        veth_[1] + " netns " + ns_[1] + " && ip -n " + ns_[0] + " addr add 10.77.0.1/24 dev " + veth_[0] +
        " && ip -n " + ns_[1] + " addr add 10.77.0.2/24 dev " + veth_[1] + " && ip -n " + ns_[0] + " link set lo up && ip -n " +
        ns_[1] + " link set lo up && ip -n " + ns_[0] + " link set " + veth_[0] + " up && ip -n " + ns_[1] + " link set " +
        veth_[1] + " up";
    if (::geteuid() != 0) {
      skip_reason_ = "needs root to create network namespaces";
    } else if (auto r = run_command(setup); r.exit_code != 0) {
      skip_reason_ = "cannot create network namespaces: " + r.err;
    }
    dir_ = fs::temp_directory_path() / ("mt_two_hosts_" + id);
    fs::create_directories(dir_);
  }
  static void TearDownTestSuite() {
    run_command("ip netns del " + ns_[0] + "; ip netns del " + ns_[1]);
    fs::remove_all(dir_);
  }
  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
  }

  // `meshtrain launch` of node `node` (2 ranks each) inside its namespace, with extra environment.
  static std::string node_command(int node, int port, int timeout, const std::string& env, const std::string& train,
                                  const std::string& launch_flags = "") {
    return "ip netns exec " + ns_[node] + " env " + env + " " + kBin + " launch -n 2 --nnodes 2 --node_rank " +
           std::to_string(node) + " --master_addr 10.77.0.1 --master_port " + std::to_string(port) + " --timeout " +
           std::to_string(timeout) + launch_flags + " -- train" + kTiny + train;
  }

  // Both nodes at once, each with its environment; their results and how long each took. Each
  // node writes to its own nodeN directory unless `shared` names one for both (checkpoints need it).
  static std::array<std::pair<CommandResult, double>, 2> run_both(int port, int timeout,
                                                                   const std::array<std::string, 2>& env,
                                                                   const std::string& train,
                                                                   const std::string& launch_flags = "",
                                                                   const std::string& shared = "") {
    auto run = [&](int node) {
      const auto start = Clock::now();
      const auto out = dir_ / (shared.empty() ? "node" + std::to_string(node) : shared);
      auto r = run_command(node_command(node, port, timeout, env[node], train + " --output_dir " + out.string(),
                                        launch_flags));
      return std::pair{r, seconds_since(start)};
    };
    auto other = std::async(std::launch::async, run, 1);
    auto first = run(0);
    return {first, other.get()};
  }

  // kill -9 of global rank `rank` (found by its environment among the processes whose command
  // line names `run_dir`) once `logged` holds `steps` lines of metrics; resolves to when it did.
  static std::future<Clock::time_point> kill_rank_once_logged(int rank, const fs::path& logged, size_t steps,
                                                              const fs::path& run_dir) {
    return std::async(std::launch::async, [=] {
      const auto start = Clock::now();
      while (seconds_since(start) < 60) {
        const auto text = slurp(logged / "metrics.jsonl");
        if (static_cast<size_t>(std::count(text.begin(), text.end(), '\n')) >= steps) {
          run_command("for p in $(pgrep -f " + run_dir.string() + "); do tr '\\0' '\\n' < /proc/$p/environ "
                      "2>/dev/null | grep -qx RANK=" + std::to_string(rank) + " && kill -9 $p; done");
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      return Clock::now();
    });
  }

  static std::string ns_[2], veth_[2], skip_reason_;
  static fs::path dir_;
};

std::string TwoHosts::ns_[2], TwoHosts::veth_[2], TwoHosts::skip_reason_;
fs::path TwoHosts::dir_;

}  // namespace

TEST_F(TwoHosts, FsdpOverTheVethReproducesTheSingleRankCurve) {
  ASSERT_EQ(run_command(kBin + " train" + kTiny + " --per_device_train_batch_size 8 --max_steps 4 --output_dir " +
                        (dir_ / "single").string()).exit_code, 0);
  const auto single = metrics_of(dir_ / "single");
  // The interface that routes to the master, then the one GLOO_SOCKET_IFNAME names.
  const std::array<std::array<std::string, 2>, 2> envs = {
      std::array<std::string, 2>{"MESHTRAIN_TEST=1", "MESHTRAIN_TEST=1"},
      {"GLOO_SOCKET_IFNAME=" + veth_[0], "GLOO_SOCKET_IFNAME=" + veth_[1]}};
  for (size_t e = 0; e < envs.size(); ++e) {
    fs::remove_all(dir_ / "node0");
    auto both = run_both(29600 + static_cast<int>(e), 30, envs[e],
                         " --per_device_train_batch_size 2 --dp_shard_size 4 --max_steps 4");
    ASSERT_EQ(both[0].first.exit_code, 0) << envs[e][0] << "\n" << both[0].first.err;
    ASSERT_EQ(both[1].first.exit_code, 0) << envs[e][1] << "\n" << both[1].first.err;
    const auto two_hosts = metrics_of(dir_ / "node0");
    ASSERT_EQ(two_hosts.size(), single.size());
    for (size_t i = 0; i < single.size(); ++i)
      EXPECT_NEAR(two_hosts[i]["loss"].get<double>(), single[i]["loss"].get<double>(),
                  1e-5 * single[i]["loss"].get<double>())
          << envs[e][0] << " step " << i + 1;
  }
}

TEST_F(TwoHosts, AnInterfaceThatDoesNotExistIsNamed) {
  auto both = run_both(29602, 10, {"GLOO_SOCKET_IFNAME=nosuch0", "GLOO_SOCKET_IFNAME=nosuch0"},
                       " --per_device_train_batch_size 2 --dp_shard_size 4 --max_steps 2");
  for (auto& [r, seconds] : both) {
    EXPECT_NE(r.exit_code, 0);
    EXPECT_LT(seconds, 10 + 15);
  }
  EXPECT_THAT(both[0].first.err + both[1].first.err, HasSubstr("GLOO_SOCKET_IFNAME: cannot use interface 'nosuch0'"));
}

TEST_F(TwoHosts, AHostThatNeverArrivesIsNamedWithinTheTimeout) {
  const auto start = Clock::now();
  auto r = run_command(node_command(0, 29603, 10, "MESHTRAIN_TEST=1", " --per_device_train_batch_size 2 --dp_shard_size 4 --max_steps 2"
                                                          " --output_dir " + (dir_ / "alone0").string()));
  EXPECT_LT(seconds_since(start), 10 + 15);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("rendezvous timed out after 10 s; rank(s) 2, 3 of 4 never arrived"));
  const auto start1 = Clock::now();
  r = run_command(node_command(1, 29604, 10, "MESHTRAIN_TEST=1", " --per_device_train_batch_size 2 --dp_shard_size 4 --max_steps 2"
                                                     " --output_dir " + (dir_ / "alone1").string()));
  EXPECT_LT(seconds_since(start1), 10 + 15);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("nothing listens on 10.77.0.1:29604 after 10 s"));
}

TEST_F(TwoHosts, ARankKilledOnTheSecondHostEndsBothWithinTheTimeout) {
  // Rank 2 (node 1, local rank 0) is killed once node 0 has logged two steps.
  const std::string train = " --per_device_train_batch_size 2 --dp_shard_size 4 --max_steps 1000000";
  fs::remove_all(dir_ / "node0");
  auto killer = kill_rank_once_logged(2, dir_ / "node0", 2, dir_ / "node1");
  auto both = run_both(29605, 10, {"MESHTRAIN_TEST=1", "MESHTRAIN_TEST=1"}, train);
  const auto killed = killer.get();
  for (int node = 0; node < 2; ++node) {
    EXPECT_NE(both[node].first.exit_code, 0) << both[node].first.err;
    EXPECT_LT(std::chrono::duration<double>(Clock::now() - killed).count(), 10 + 15);
  }
  EXPECT_THAT(both[1].first.err, HasSubstr("meshtrain launch: rank 2 was killed by signal 9"));
}

TEST_F(TwoHosts, WithMaxRestartsARunThatLosesARankCompletesOnTheUninterruptedCurve) {
  const std::string train = " --per_device_train_batch_size 2 --dp_shard_size 4 --max_steps 40 --save_steps 4";
  const std::array<std::string, 2> env = {"MESHTRAIN_TEST=1", "MESHTRAIN_TEST=1"};
  auto full = run_both(29606, 30, env, train, "", "full");
  ASSERT_EQ(full[0].first.exit_code, 0) << full[0].first.err;
  // Rank 2 (node 1) is killed once five steps are logged; both launchers restart their ranks,
  // which resume from the newest checkpoint in the directory both nodes share.
  auto killer = kill_rank_once_logged(2, dir_ / "restarted", 5, dir_ / "restarted");
  auto both = run_both(29607, 30, env, train, " --max_restarts 1", "restarted");
  killer.get();
  for (int node = 0; node < 2; ++node) {
    EXPECT_EQ(both[node].first.exit_code, 0) << both[node].first.err;
    EXPECT_THAT(both[node].first.err, HasSubstr("restarting the ranks (restart 1 of 1)"));
  }
  const auto uninterrupted = metrics_of(dir_ / "full"), restarted = metrics_of(dir_ / "restarted");
  ASSERT_EQ(restarted.size(), uninterrupted.size());
  for (size_t i = 0; i < restarted.size(); ++i)
    EXPECT_EQ(restarted[i]["loss"].get<double>(), uninterrupted[i]["loss"].get<double>()) << "step " << i + 1;
}

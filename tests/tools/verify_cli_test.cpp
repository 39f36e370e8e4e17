// meshtrain verify as a user runs it: every 2-rank layout of llama-tiny within 1e-5 of one rank;
// a setting that is legitimately not layout-invariant (MoE capacity dropping, which counts each
// rank's own tokens) caught under data parallelism while tensor parallelism still passes; bad
// layout names and sizes refused in one line before anything runs; temporary runs removed.
#include <gtest/gtest.h>

#include <filesystem>
#include <regex>
#include <sstream>

#include "support/run_command.h"

using namespace meshtrain::testing;
namespace fs = std::filesystem;

namespace {

struct TableRow {
  std::string result;
  double loss = -1, grad_norm = -1;
};

// The table's rows by layout: "name ranks loss grad_norm tokens/s peak result...".
std::map<std::string, TableRow> table_of(const std::string& out) {
  std::map<std::string, TableRow> rows;
  std::istringstream in(out);
  const std::regex row(R"(^(\S+) +(\d+) +(\S+) +(\S+) +(\S+) +(\S+)  (.*)$)");
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (!std::regex_match(line, m, row) || m[1] == "layout") continue;
    TableRow r{m[7]};
    if (m[3] != "-") r.loss = std::stod(m[3]), r.grad_norm = std::stod(m[4]);
    rows[m[1]] = r;
  }
  return rows;
}

fs::path fresh_dir(const std::string& name) {
  auto p = fs::temp_directory_path() / ("mt_verify_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

int count_lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

}  // namespace

TEST(VerifyCli, EveryTwoRankLayoutOfLlamaTinyMatchesOneRankAndKeepKeepsTheRuns) {
  auto tmp = fresh_dir("pass");
  auto r = run_command("TMPDIR=" + tmp.string() + " " + kBin + " verify --config llama-tiny -n 2 --max_steps 3 --keep");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto rows = table_of(r.out);
  EXPECT_EQ(rows.size(), 6u) << r.out;  // the reference row reads "single (reference)"
  for (auto name : {"dp_replicate2", "dp_shard2", "cp2", "sp2", "tp2", "tp2+sp"}) {
    ASSERT_TRUE(rows.contains(name)) << name << "\n" << r.out;
    EXPECT_EQ(rows[name].result, "ok") << name;
    EXPECT_LE(rows[name].loss, 1e-5) << name;
    EXPECT_LE(rows[name].grad_norm, 1e-5) << name;
  }
  EXPECT_NE(r.out.find("single (reference)     1"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(" -  ok"), std::string::npos) << "a run without peak_memory_mib\n" << r.out;
  EXPECT_NE(r.err.find("verify: [7/7] tp2+sp (2 ranks) ... done"), std::string::npos) << r.err;
  // --keep: one directory per run with its log and every step's metrics.
  std::vector<fs::path> kept(fs::directory_iterator(tmp), fs::directory_iterator{});
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_NE(r.err.find("runs kept in " + kept[0].string()), std::string::npos) << r.err;
  for (auto name : {"single", "dp_shard2", "tp2+sp"}) {
    EXPECT_TRUE(fs::exists(kept[0] / name / "output.log")) << name;
    EXPECT_EQ(metrics_of(kept[0] / name / "run").size(), 3u) << name;
  }
  fs::remove_all(tmp);
}

// Capacity factor 0.5 drops half the assignments of each forward in token order. One rank
// routes the whole global batch, each dp_replicate rank its own half, so they keep different
// tokens and the losses differ; tensor parallelism routes the whole batch on every rank, so it
// matches. The check fails exactly where it should, and the run's directories are removed.
TEST(VerifyCli, DroppingMoeRoutingUnderDataParallelismFailsTheCheckWhileTensorParallelismPasses) {
  auto tmp = fresh_dir("fail");
  auto r = run_command("TMPDIR=" + tmp.string() + " " + kBin +
                       " verify --config mixtral-tiny -n 2 --max_steps 2 --moe_capacity_factor 0.5 dp_replicate2 tp2");
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  auto rows = table_of(r.out);
  ASSERT_EQ(rows.size(), 2u) << r.out;
  EXPECT_EQ(rows["tp2"].result, "ok") << r.out;
  EXPECT_LE(rows["tp2"].loss, 1e-5);
  EXPECT_EQ(rows["dp_replicate2"].result, "FAIL") << r.out;
  EXPECT_GT(rows["dp_replicate2"].loss, 1e-5) << r.out;
  EXPECT_GT(rows["dp_replicate2"].grad_norm, 1e-4) << r.out;
  EXPECT_NE(r.err.find("meshtrain verify: 1 of 2 layouts differ from the single-rank run beyond 1.0e-05 or failed: "
                       "dp_replicate2\n"),
            std::string::npos)
      << r.err;
  EXPECT_TRUE(fs::is_empty(tmp)) << "runs left behind in " << tmp;
  fs::remove_all(tmp);
}

TEST(VerifyCli, BadLayoutsAndSizesAreOneLineBeforeAnythingRuns) {
  auto tmp = fresh_dir("bad");
  auto expect_error = [&](const std::string& args, int code, const std::string& phrase) {
    auto r = run_command("TMPDIR=" + tmp.string() + " " + kBin + " verify " + args);
    EXPECT_EQ(r.exit_code, code) << args << "\n" << r.err;
    EXPECT_EQ(count_lines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find(phrase), std::string::npos) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  };
  expect_error("-n 2 tp4", 2, "meshtrain verify: layout tp4 needs 4 ranks, which does not divide -n 2");
  expect_error("-n 3 tp3", 2, "meshtrain verify: layout tp3: tp_size 3 does not divide num_attention_heads 4");
  expect_error("-n 2 tq2", 2, "meshtrain verify: layout 'tq2': unknown dimension 'tq'");
  expect_error("-n 2 dp_shard2xep2", 2, "the model has no MoE layers");
  expect_error("-n 2 --seq_len 30 cp2", 2, "layout cp2: context parallelism: sequence length T=30");
  expect_error("-n 2 --global_batch_size 3", 2, "--global_batch_size 3 does not divide over dp_replicate2's 2");
  expect_error("tp2", 2, "-n N (--nproc) is required");
  expect_error("-n 1", 2, "no layout to compare on -n 1");
  expect_error("-n 2 --config no-such-model", 2, "--config 'no-such-model' is neither");
  EXPECT_TRUE(fs::is_empty(tmp));
  EXPECT_EQ(run_command(kBin + " verify --help").exit_code, 0);
  fs::remove_all(tmp);
}

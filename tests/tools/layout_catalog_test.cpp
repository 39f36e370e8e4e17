// The layout catalogue: names and their flags, parse_layout's round trip and its errors, the
// model checks layout_problem reuses, and how many layouts of 1, 2 and 4 ranks llama-tiny and
// mixtral-tiny admit (counted here by hand from the mesh rules); verify's run helpers.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "tools/layout_catalog.h"
#include "tools/verify_runs.h"
#include "util/check.h"

using namespace meshtrain;
using meshtrain::tools::Layout;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

namespace {

models::LlamaConfig config(const std::string& name) {
  return models::LlamaConfig::load(fs::path(MESHTRAIN_SOURCE_DIR) / "configs" / name);
}

std::set<std::string> names(const std::vector<Layout>& layouts) {
  std::set<std::string> out;
  for (auto& l : layouts) out.insert(l.name());
  return out;
}

std::string parse_error(const std::string& name) {
  try {
    tools::parse_layout(name);
  } catch (const UsageError& e) {
    return e.what();
  }
  return "no error for '" + name + "'";
}

}  // namespace

TEST(LayoutCatalog, NamesAndFlagsFollowTheMeshOrderAndTheTrainFlags) {
  Layout l;
  EXPECT_EQ(l.name(), "single");
  EXPECT_TRUE(l.flags().empty());
  l.dp_shard = 2, l.tp = 2, l.sequence_parallel = true;
  EXPECT_EQ(l.name(), "dp_shard2xtp2+sp");
  EXPECT_EQ(l.flags(), (std::vector<std::string>{"--dp_shard_size", "2", "--tp_size", "2", "--sequence_parallel"}));
  Layout e;
  e.tp = 4, e.ep = 2, e.ep_mode = parallel::EpMode::AllReduce;
  EXPECT_EQ(e.name(), "tp4xep2+ep_allreduce");
  EXPECT_EQ(e.flags(), (std::vector<std::string>{"--tp_size", "4", "--ep_size", "2", "--ep_mode", "allreduce"}));
  EXPECT_TRUE(e.mesh_sizes().ep_in_tp);
  EXPECT_EQ(e.options().ep_size, 2);
  Layout all{2, 3, 5, 7, 11};
  EXPECT_EQ(all.name(), "dp_replicate2xdp_shard3xcp5xsp7xtp11");
  EXPECT_EQ(all.world(), 2 * 3 * 5 * 7 * 11);
}

TEST(LayoutCatalog, ParseAcceptsAnyOrderOfTermsAndRoundTripsEveryCatalogueName) {
  auto a = tools::parse_layout("tp2xdp_shard2+sp");
  EXPECT_EQ(a.name(), "dp_shard2xtp2+sp");
  EXPECT_EQ(a.dp_shard, 2);
  EXPECT_EQ(a.tp, 2);
  EXPECT_TRUE(a.sequence_parallel);
  EXPECT_EQ(tools::parse_layout("single").world(), 1);
  EXPECT_EQ(tools::parse_layout("tp1").name(), "single");
  auto e = tools::parse_layout("ep2xtp4+ep_allreduce+sp");
  EXPECT_EQ(e.name(), "tp4xep2+sp+ep_allreduce");
  EXPECT_EQ(e.ep_mode, parallel::EpMode::AllReduce);
  for (auto& l : tools::valid_layouts(config("mixtral-tiny"), 4)) {
    auto back = tools::parse_layout(l.name());
    EXPECT_EQ(back.name(), l.name());
    EXPECT_EQ(back.flags(), l.flags()) << l.name();
    EXPECT_EQ(back.world(), l.world()) << l.name();
  }
}

TEST(LayoutCatalog, InvalidNamesAreRejectedWithWhatIsWrong) {
  EXPECT_THAT(parse_error("tq2"), HasSubstr("layout 'tq2': unknown dimension 'tq'"));
  EXPECT_THAT(parse_error("tp"), HasSubstr("'tp' needs a size, as tp2"));
  EXPECT_THAT(parse_error("tp2xtp2"), HasSubstr("'tp' is given twice"));
  EXPECT_THAT(parse_error("tp0"), HasSubstr("'tp0' is not tp followed by a positive size"));
  EXPECT_THAT(parse_error("tp2a"), HasSubstr("'tp2a' is not tp followed by a positive size"));
  EXPECT_THAT(parse_error("tp2x"), HasSubstr("an empty term"));
  EXPECT_THAT(parse_error(""), HasSubstr("no dimensions"));
  EXPECT_THAT(parse_error("tp2+lp"), HasSubstr("unknown or repeated option '+lp'"));
  EXPECT_THAT(parse_error("tp2+sp+sp"), HasSubstr("unknown or repeated option '+sp'"));
  EXPECT_THAT(parse_error("dp_shard2+sp"), HasSubstr("+sp (sequence parallelism) needs tp2 or more"));
  EXPECT_THAT(parse_error("tp2+ep_allreduce"), HasSubstr("+ep_allreduce needs ep2 or more"));
  EXPECT_THAT(parse_error("tq2"), HasSubstr("e.g. dp_shard2xtp2+sp"));  // the grammar comes along
}

TEST(LayoutCatalog, LayoutProblemsAreTheModelAndMeshChecksOfTrain) {
  const auto tiny = config("llama-tiny"), mixtral = config("mixtral-tiny");
  EXPECT_EQ(tools::layout_problem(tiny, tools::parse_layout("dp_shard2xtp2+sp")), std::nullopt);
  EXPECT_THAT(tools::layout_problem(tiny, tools::parse_layout("tp3")).value_or(""),
              HasSubstr("tp_size 3 does not divide num_attention_heads 4"));
  EXPECT_THAT(tools::layout_problem(tiny, tools::parse_layout("sp3")).value_or(""), HasSubstr("not divisible by SP size 3"));
  EXPECT_THAT(tools::layout_problem(tiny, tools::parse_layout("dp_shard2xep2")).value_or(""),
              HasSubstr("the model has no MoE layers"));
  EXPECT_THAT(tools::layout_problem(mixtral, tools::parse_layout("tp2xep2")).value_or(""),
              HasSubstr("ep_size 2 must divide dp_shard_size 1 x cp_size 1"));
  EXPECT_THAT(tools::layout_problem(mixtral, tools::parse_layout("tp2xep4+ep_allreduce")).value_or(""),
              HasSubstr("ep_size 4 must divide tp_size 2"));
  EXPECT_THAT(tools::layout_problem(tiny, tools::parse_layout("cp2"), 6).value_or(""),
              HasSubstr("not divisible by 2*cp=4"));
}

// 4 = 2·2 spread over the 5 mesh dims in C(6, 4) = 15 ordered ways; llama-tiny (4 heads, 2 kv
// heads) admits them all, tp 4 and sp 4 replicating the kv heads. tp > 1 in 5 of them adds +sp: 20.
// mixtral-tiny (4 experts) adds expert parallelism. Token dispatch needs ep | dp_shard·cp: that
// product is 4 in 3 meshes (tp 1; ep 2 and 4: 6 layouts) and 2 in 6 (ep 2; two of them with tp 2,
// so also +sp: 8 layouts), 14. Router masking needs ep | tp: tp 4 once (ep 2, 4, each ±sp: 4),
// tp 2 in 4 meshes (ep 2, ±sp: 8), 12. 20 + 14 + 12 = 46.
TEST(LayoutCatalog, CountsOfLayoutsForWorlds1To4) {
  const auto tiny = config("llama-tiny"), mixtral = config("mixtral-tiny");
  EXPECT_EQ(names(tools::valid_layouts(tiny, 1)), std::set<std::string>{"single"});
  EXPECT_EQ(names(tools::valid_layouts(tiny, 2)),
            (std::set<std::string>{"dp_replicate2", "dp_shard2", "cp2", "sp2", "tp2", "tp2+sp"}));
  EXPECT_EQ(names(tools::valid_layouts(mixtral, 2)),
            (std::set<std::string>{"dp_replicate2", "dp_shard2", "cp2", "sp2", "tp2", "tp2+sp", "dp_shard2xep2",
                                   "cp2xep2", "tp2xep2+ep_allreduce", "tp2xep2+sp+ep_allreduce"}));
  const auto dense4 = tools::valid_layouts(tiny, 4), moe4 = tools::valid_layouts(mixtral, 4);
  EXPECT_EQ(dense4.size(), 20u);
  EXPECT_EQ(names(dense4).size(), 20u);  // no name twice
  EXPECT_EQ(moe4.size(), 46u);
  EXPECT_EQ(names(moe4).size(), 46u);
  for (auto& l : moe4) EXPECT_EQ(l.world(), 4) << l.name();
  // Sequences of 6 tokens cannot be cut into 2·cp = 4 chunks: no cp2 layout, the rest stay.
  EXPECT_EQ(names(tools::valid_layouts(tiny, 2, 6)), (std::set<std::string>{"dp_replicate2", "dp_shard2", "sp2", "tp2", "tp2+sp"}));
}

TEST(VerifyRuns, AFailedCommandGivesItsErrorLineAndAMissingMetricsFileIsAnError) {
  auto dir = fs::temp_directory_path() / ("mt_verify_runs_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto failed = tools::run_logged(
      {"/bin/sh", "-c", "echo progress; echo 'meshtrain train: error: out of tokens' >&2; echo bye; exit 3"},
      dir / "a.log", dir, 3);
  EXPECT_EQ(failed.error, "exit 3: meshtrain train: error: out of tokens");
  auto silent = tools::run_logged({"/bin/sh", "-c", "exit 0"}, dir / "b.log", dir, 3);
  EXPECT_EQ(silent.error, "no metrics.jsonl was written");
  auto shortrun = tools::run_logged(
      {"/bin/sh", "-c", "echo '{\"loss\":2,\"grad_norm\":1,\"tokens_per_s\":5}' > " + (dir / "metrics.jsonl").string()},
      dir / "c.log", dir, 3);
  EXPECT_EQ(shortrun.error, "logged 1 of 3 steps");
  fs::remove_all(dir);
}

TEST(VerifyRuns, RelativeDifferencesAreTheLargestOverTheStepsAndNonFiniteIsInfinite) {
  EXPECT_DOUBLE_EQ(tools::max_relative_difference({2.0, 1.01}, {2.0, 1.0}), 1.01 / 1.0 - 1.0);
  EXPECT_EQ(tools::max_relative_difference({1.0, 1.0}, {1.0, 1.0}), 0.0);
  EXPECT_TRUE(std::isinf(tools::max_relative_difference({std::nan("")}, {1.0})));
  EXPECT_EQ(tools::error_line("a\nb\n\n"), "b");
}

// meshtrain verify: the parity suite as a command. Trains the single-rank reference and each
// layout (all that fit N ranks, or those named) for a few steps on the same global batch, each
// in its own process group and directory, and fails when any step's loss or gradient norm is
// further than the tolerance from the reference.
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "tools/commands.h"
#include "tools/flags.h"
#include "tools/layout_catalog.h"
#include "tools/verify_runs.h"
#include "util/check.h"
#include "util/files.h"

namespace meshtrain::tools {

namespace fs = std::filesystem;

namespace {

constexpr int kMaxRanks = 1024;

const char* kSynopsis =
    "[--config C] -n N [LAYOUT ...] [flags]\n\n"
    "Trains the single-rank reference and each layout for --max_steps steps on the same global batch\n"
    "and data, and prints per layout the largest relative difference of a step's loss and gradient\n"
    "norm from the reference, tokens/s and peak memory. Exits 1 when a layout is beyond --tolerance\n"
    "or fails to run. Without LAYOUTs: every layout of k ranks the model admits, for each k > 1 that\n"
    "divides N. A LAYOUT is 'single' or dims joined by 'x' with options after '+', as\n"
    "dp_replicate2, dp_shard2xtp2+sp, cp2xsp2, tp4xep2+ep_allreduce (dims dp_replicate dp_shard cp\n"
    "sp tp ep; +sp: Megatron sequence parallelism; +ep_allreduce: router-masking expert parallelism).";

struct Job {
  std::string model_flag, model_path;  // --config_name FILE or --model_name_or_path DIR
  models::LlamaConfig config;
  int nproc = 1;
  int64_t steps = 5, seq_len = 0, global_batch = 0;
  double tolerance = 1e-5;
  std::vector<std::string> train_flags;  // every run's, besides the layout's and its batch
  std::vector<std::string> launch_flags;
  bool keep = false;
};

struct Row {
  Layout layout;
  RunRecord run;
  double loss_diff = 0.0, grad_norm_diff = 0.0;
  bool passed = false;
};

// "-n N", "-nN" and "-n=N" as --nproc, so Flags parses them.
Args expand_short_flags(Args args) {
  for (auto& a : args) {
    if (!a.starts_with("-n") || a.starts_with("--")) continue;
    const std::string rest = a.substr(2);
    a = "--nproc" + (rest.empty() || rest[0] == '=' ? rest : "=" + rest);
  }
  return args;
}

// A path (a config.json, or a directory holding one), else a name under configs/.
fs::path resolve_model(const std::string& given) {
  for (const auto& candidate : {resolve_path(given), resolve_path("configs/" + given)})
    if (!candidate.empty() && fs::exists(candidate)) return candidate;
  throw UsageError("meshtrain verify: --config '" + given + "' is neither a config.json, a directory holding one, "
                   "nor a name under configs/");
}

std::string self_path() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  MT_CHECK(n > 0, "cannot find the meshtrain binary (/proc/self/exe): ", util::errno_message(errno));
  return std::string(buf, static_cast<size_t>(n));
}

int64_t positive(const Flags& flags, const std::string& name, int64_t fallback) {
  const int64_t v = flags.get_int(name, fallback);
  if (v < 1) throw UsageError(str_cat("meshtrain verify: --", name, " must be at least 1, got ", v));
  return v;
}

Job job_from(const Flags& flags) {
  Job job;
  const auto model = resolve_model(flags.get("config", "llama-tiny"));
  // A checkpoint's weights are the starting point; a bare config (or its config.json) starts fresh.
  const bool weights = fs::is_directory(model) && (fs::exists(model / "model.safetensors") ||
                                                   fs::exists(model / "model.safetensors.index.json"));
  job.model_flag = weights ? "--model_name_or_path" : "--config_name";
  job.model_path = model.string();
  job.config = models::LlamaConfig::load(model);
  if (!flags.has("nproc")) throw UsageError("meshtrain verify: -n N (--nproc) is required");
  job.nproc = static_cast<int>(positive(flags, "nproc", 1));
  if (job.nproc > kMaxRanks) throw UsageError(str_cat("meshtrain verify: -n must be at most ", kMaxRanks));
  job.steps = positive(flags, "max_steps", 5);
  // Multiples of 2N and N: every layout of k | N ranks shards such sequences and batches evenly.
  const int64_t n = job.nproc;
  job.seq_len = positive(flags, "seq_len", (64 + 2 * n - 1) / (2 * n) * (2 * n));
  job.global_batch = positive(flags, "global_batch_size", (8 + n - 1) / n * n);
  job.tolerance = flags.get_double("tolerance", 1e-5);
  if (job.tolerance < 0) throw UsageError(str_cat("meshtrain verify: --tolerance must be >= 0, got ", job.tolerance));
  job.keep = flags.has("keep");
  job.train_flags = {"--data",          resolve_path(flags.get("data", "data/corpus.txt")),
                     "--seq_len",       std::to_string(job.seq_len),
                     "--max_steps",     std::to_string(job.steps),
                     "--logging_steps", "1",
                     "--save_steps",    "0",
                     "--warmup_steps",  "0",
                     "--learning_rate", flags.get("learning_rate", "1e-3"),
                     "--gradient_accumulation_steps", "1"};
  for (const char* passed : {"seed", "moe_capacity_factor", "timeout"})
    if (flags.has(passed)) job.train_flags.insert(job.train_flags.end(), {std::string("--") + passed, flags.get(passed, "")});
  if (flags.has("timeout")) job.launch_flags = {"--timeout", flags.get("timeout", "")};
  return job;
}

// The layouts to run: those named (each checked, one error before anything runs), or every
// layout of each k > 1 dividing N that the model and the sequence length admit.
std::vector<Layout> chosen_layouts(const Job& job, const Args& names) {
  std::vector<Layout> out;
  for (auto& name : names) {
    Layout l;
    try {
      l = parse_layout(name);
    } catch (const UsageError& e) {
      throw UsageError(std::string("meshtrain verify: ") + e.what());
    }
    if (job.nproc % l.world() != 0)
      throw UsageError(str_cat("meshtrain verify: layout ", l.name(), " needs ", l.world(),
                               " ranks, which does not divide -n ", job.nproc));
    if (auto problem = layout_problem(job.config, l, job.seq_len))
      throw UsageError(str_cat("meshtrain verify: layout ", l.name(), ": ", *problem));
    out.push_back(l);
  }
  if (names.empty())
    for (int64_t k = 2; k <= job.nproc; ++k)
      if (job.nproc % k == 0)
        for (auto& l : valid_layouts(job.config, k, job.seq_len)) out.push_back(l);
  if (out.empty())
    throw UsageError(str_cat("meshtrain verify: no layout to compare on -n ", job.nproc, " (give N >= 2)"));
  for (auto& l : out)
    if (job.global_batch % (l.dp_replicate * l.dp_shard) != 0)
      throw UsageError(str_cat("meshtrain verify: --global_batch_size ", job.global_batch, " does not divide over ",
                               l.name(), "'s ", l.dp_replicate * l.dp_shard, " data-parallel ranks"));
  return out;
}

// One layout's training: the reference runs train directly, the others under launch.
RunRecord run_layout(const Job& job, const Layout& layout, const fs::path& dir) {
  fs::create_directories(dir);
  std::vector<std::string> argv = {self_path()};
  if (layout.world() > 1) {
    argv.insert(argv.end(), {"launch", "-n", std::to_string(layout.world())});
    argv.insert(argv.end(), job.launch_flags.begin(), job.launch_flags.end());
    argv.push_back("--");
  }
  argv.insert(argv.end(), {"train", job.model_flag, job.model_path});
  argv.insert(argv.end(), job.train_flags.begin(), job.train_flags.end());
  const int64_t per_device = job.global_batch / (layout.dp_replicate * layout.dp_shard);
  argv.insert(argv.end(), {"--per_device_train_batch_size", std::to_string(per_device), "--output_dir",
                           (dir / "run").string()});
  for (auto& f : layout.flags()) argv.push_back(f);
  return run_logged(argv, dir / "output.log", dir / "run", job.steps);
}

std::string number(const char* format, double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

void print_table(const Job& job, const RunRecord& reference, const std::vector<Row>& rows) {
  size_t width = std::string("single (reference)").size();
  for (auto& r : rows) width = std::max(width, r.layout.name().size());
  auto line = [&](const std::string& name, int64_t ranks, const std::string& loss, const std::string& norm,
                  const RunRecord& run, const std::string& result) {
    const std::string peak = run.peak_memory_mib ? number("%.1f", *run.peak_memory_mib) : "-";
    const std::string rate = run.error.empty() ? number("%.0f", run.tokens_per_s) : "-";
    std::printf("%-*s %5lld %10s %10s %10s %9s  %s\n", static_cast<int>(width), name.c_str(), (long long)ranks,
                loss.c_str(), norm.c_str(), rate.c_str(), peak.c_str(), result.c_str());
  };
  std::printf("%-*s %5s %10s %10s %10s %9s  %s\n", static_cast<int>(width), "layout", "ranks", "loss", "grad_norm",
              "tokens/s", "peak MiB", "result");
  line("single (reference)", 1, "-", "-", reference, "reference");
  for (auto& r : rows) {
    if (!r.run.error.empty()) {
      line(r.layout.name(), r.layout.world(), "-", "-", r.run, "error: " + r.run.error);
      continue;
    }
    line(r.layout.name(), r.layout.world(), number("%.1e", r.loss_diff), number("%.1e", r.grad_norm_diff), r.run,
         r.passed ? "ok" : "FAIL");
  }
  std::printf("loss, grad_norm: the largest relative difference from the reference over %lld steps "
              "(global batch %lld x %lld tokens); tolerance %.1e\n",
              (long long)job.steps, (long long)job.global_batch, (long long)job.seq_len, job.tolerance);
}

// Where the runs go: a fresh temporary directory, removed at the end unless --keep.
class RunsDir {
 public:
  explicit RunsDir(bool keep) : keep_(keep) {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/meshtrain-verify-XXXXXX";
    MT_CHECK(::mkdtemp(pattern.data()), "cannot create a temporary directory ", pattern, ": ",
             util::errno_message(errno));
    path_ = pattern;
  }
  ~RunsDir() {
    std::error_code ignored;
    if (keep_)
      std::fprintf(stderr, "verify: runs kept in %s\n", path_.c_str());
    else
      fs::remove_all(path_, ignored);
  }
  const fs::path& path() const { return path_; }

 private:
  bool keep_;
  fs::path path_;
};

RunRecord run_with_progress(const Job& job, const Layout& layout, const fs::path& dir, size_t index, size_t total) {
  std::fprintf(stderr, "verify: [%zu/%zu] %s (%lld rank%s) ...", index, total, layout.name().c_str(),
               (long long)layout.world(), layout.world() == 1 ? "" : "s");
  std::fflush(stderr);
  auto run = run_layout(job, layout, dir);
  std::fprintf(stderr, " %s (%.1f s)\n", run.error.empty() ? "done" : "failed", run.seconds);
  return run;
}

}  // namespace

int run_verify(const Args& argv) {
  Flags flags("verify",
              {{"config", "config name under configs/, config.json, or a directory with one (and weights, which "
                          "the runs then start from) (default llama-tiny)"},
               {"nproc", "-n: ranks this machine may use; layouts of k ranks for every k dividing it (required)"},
               {"max_steps", "optimizer steps of every run (default 5)"},
               {"seq_len", "tokens per sequence (default: the smallest multiple of 2N from 64)"},
               {"global_batch_size", "sequences per step in every layout, split over its data-parallel ranks "
                                     "(default: the smallest multiple of N from 8)"},
               {"tolerance", "largest relative difference of any step's loss or gradient norm (default 1e-5)"},
               {"data", "token file of every run (default data/corpus.txt)"},
               {"learning_rate", "AdamW learning rate of every run, no warm-up (default 1e-3)"},
               {"seed", "initialisation and data-order seed of every run (default train's)"},
               {"moe_capacity_factor", "MoE: passed to every run; dropping routing counts each rank's tokens, so "
                                       "data-parallel layouts legitimately differ"},
               {"timeout", "seconds a rank may stall before its run fails (default 300)"},
               {"keep", "keep the runs' directories (logs, metrics.jsonl) and print where", true}},
              expand_short_flags(argv));
  if (flags.help_requested()) {
    std::cout << flags.usage(kSynopsis);
    return 0;
  }
  const Job job = job_from(flags);
  const auto layouts = chosen_layouts(job, flags.positional());
  RunsDir runs(job.keep);
  const size_t total = layouts.size() + 1;
  const RunRecord reference = run_with_progress(job, Layout{}, runs.path() / "single", 1, total);
  if (!reference.error.empty())
    fail("the single-rank reference run failed: ", reference.error,
         job.keep ? "" : " (--keep keeps its log)");
  std::vector<Row> rows;
  std::vector<std::string> failing;
  for (size_t i = 0; i < layouts.size(); ++i) {
    Row row{layouts[i], run_with_progress(job, layouts[i], runs.path() / layouts[i].name(), i + 2, total)};
    if (row.run.error.empty()) {
      row.loss_diff = max_relative_difference(row.run.losses, reference.losses);
      row.grad_norm_diff = max_relative_difference(row.run.grad_norms, reference.grad_norms);
      row.passed = row.loss_diff <= job.tolerance && row.grad_norm_diff <= job.tolerance;
    }
    if (!row.passed) failing.push_back(row.layout.name());
    rows.push_back(std::move(row));
  }
  print_table(job, reference, rows);
  std::fflush(stdout);
  if (failing.empty()) return 0;
  std::string names;
  for (auto& n : failing) names += (names.empty() ? "" : ", ") + n;
  std::cerr << "meshtrain verify: " << failing.size() << " of " << rows.size()
            << " layouts differ from the single-rank run beyond " << number("%.1e", job.tolerance)
            << " or failed: " << names << "\n";
  return 1;
}

}  // namespace meshtrain::tools

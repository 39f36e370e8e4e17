// meshtrain: the command-line entry point. Errors become one line on stderr (stack frames only
// with --debug): exit code 2 for bad usage, 1 for everything else. A rank whose error is the
// symptom of another rank's failure reports that one (dist/failure_board.h); under `launch` the
// line also goes to $MESHTRAIN_ERROR_FILE for the launcher.
#include <ATen/Parallel.h>
#include <c10/util/Logging.h>
#include <signal.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "dist/failure_board.h"
#include "tools/commands.h"
#include "tools/flight_dump.h"
#include "util/check.h"
#include "util/error_text.h"
#include "util/files.h"
#include "util/memory_meter.h"

namespace {

const char* kUsage =
    "usage: meshtrain COMMAND [flags] [--debug]   (meshtrain COMMAND --help for its flags;\n"
    "       --debug: errors with their C++ stack frames)\n\n"
    "commands:\n"
    "  train      train a Llama model (default: llama-tiny on data/corpus.txt)\n"
    "  eval       token-weighted loss of a checkpoint over a file's consecutive windows\n"
    "  generate   continue a prompt (greedy or top-k sampling, byte tokenizer)\n"
    "  info       parameters and FLOPs per token of a config; the runtime's threads and BLAS\n"
    "  launch     start N ranks of a command, as torchrun does (meshtrain launch -n N -- train ...)\n"
    "  plan       each rank's mesh coordinates and groups; with a config, predicted memory and bytes per\n"
    "             mesh dim, or every layout of a world ranked by them\n"
    "  verify     train the single-rank run and each parallel layout a few steps; fail if any differs\n"
    "  plot       training curves of runs (their metrics.jsonl) as SVG or PNG: plot RUN_DIR... -o FILE.png\n"
    "  tokenize   text files (.txt, .jsonl) through a Hugging Face tokenizer.json into a .bin or .npy token file\n";

// One intra-op pool (OpenMP, which MKL shares) sized to this process's share of the cores.
void configure_threads() {
  const char* local = std::getenv("LOCAL_WORLD_SIZE");
  const int local_ranks = local ? std::max(1, std::atoi(local)) : 1;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(std::max(1, cores / local_ranks));
  at::set_num_interop_threads(1);
}

// One line for the user; with --debug the whole text, stack frames included.
std::string shown_error(const std::exception& e, bool debug) {
  return debug ? e.what() : meshtrain::util::without_stack_frames(e.what());
}

// "rank 3: x" as "x", where the rank is named already.
std::string without_rank_prefix(const std::string& message) {
  const auto colon = message.find(": ");
  if (!message.starts_with("rank ") || colon == std::string::npos ||
      message.find_first_not_of("0123456789", 5) != colon)
    return message;
  return message.substr(colon + 2);
}

// The line printed for a failed command; under `launch`, also the error file the launcher reads
// to name the rank that failed first (the earliest report wins).
int report_error(const std::string& command, const std::string& own) {
  using namespace meshtrain;
  // The flight record first: once every rank has reported, rank 0 exits and the launcher reads it.
  tools::dump_flight_record("exit after a failure");
  const auto first = dist::report_failure(own);
  const std::string line = first ? str_cat("rank ", first->rank, " failed: ", without_rank_prefix(first->message)) : own;
  std::cerr << "meshtrain " << command << ": error: " << line << "\n";
  const char* file = std::getenv("MESHTRAIN_ERROR_FILE");
  const char* rank = std::getenv("RANK");
  if (file && *file) {
    const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    nlohmann::json j = {{"failed_rank", first ? first->rank : (rank ? std::atoi(rank) : 0)},
                        {"message", without_rank_prefix(first ? first->message : own)},
                        {"time", now}};
    try {
      util::write_file_atomic(file, j.dump() + "\n");
    } catch (const std::exception&) {
    }
  }
  dist::wait_for_reports(std::chrono::seconds(3));
  return 1;
}

int dispatch(const std::string& command, const std::vector<std::string>& args, bool debug) {
  using namespace meshtrain;
  try {
    configure_threads();
    util::install_memory_meter();  // before the model's tensors, so that they are counted
    if (command == "train") return tools::run_train(args);
    if (command == "eval") return tools::run_eval(args);
    if (command == "generate") return tools::run_generate(args);
    if (command == "info") return tools::run_info(args);
    if (command == "launch") return tools::run_launch(args);
    if (command == "plan") return tools::run_plan(args);
    if (command == "verify") return tools::run_verify(args);
    if (command == "plot") return tools::run_plot(args);
    if (command == "tokenize") return tools::run_tokenize(args);
    throw UsageError("meshtrain: unknown command '" + command +
                     "' (commands: train, eval, generate, info, launch, plan, verify, plot, tokenize)");
  } catch (const UsageError& e) {
    std::cerr << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    return report_error(command, shown_error(e, debug));
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace meshtrain;
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << kUsage;
    return args.empty() ? 2 : 0;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  // Before a "--", so that `launch ... -- train --debug` passes it on to the ranks.
  const auto end = std::find(args.begin(), args.end(), std::string("--"));
  const auto debug_flag = std::find(args.begin(), end, std::string("--debug"));
  const bool debug = debug_flag != end;
  if (debug) args.erase(debug_flag);
  // libtorch's own warnings (store connection retries, with stack traces) only with --debug.
  if (!debug && !std::getenv("TORCH_CPP_LOG_LEVEL")) FLAGS_caffe2_log_level = 2;  // errors and above
  // SIGUSR1 asks for the flight record (tools/flight_dump.h); before the recorder is up, or in a
  // command without one, it must not kill the process.
  ::signal(SIGUSR1, SIG_IGN);
  const int code = dispatch(command, args, debug);
  tools::stop_flight_recorder();
  dist::close_failure_board();  // the process groups close here, after any failure was reported
  return code;
}

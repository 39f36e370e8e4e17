// meshtrain: the command-line entry point. Errors become one line on stderr: exit code 2 for
// bad usage, 1 for everything else.
#include <ATen/Parallel.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "tools/commands.h"
#include "util/check.h"

namespace {

const char* kUsage =
    "usage: meshtrain COMMAND [flags]   (meshtrain COMMAND --help for its flags)\n\n"
    "commands:\n"
    "  train      train a Llama model (default: llama-tiny on data/corpus.txt)\n"
    "  eval       token-weighted loss of a checkpoint over a file's consecutive windows\n"
    "  generate   continue a prompt (greedy or top-k sampling, byte tokenizer)\n"
    "  info       parameters and FLOPs per token of a config; the runtime's threads and BLAS\n"
    "  launch     start N ranks of a command, as torchrun does (meshtrain launch -n N -- train ...)\n"
    "  plan       each rank's mesh coordinates and groups for a world size and parallel sizes\n";

// One intra-op pool (OpenMP, which MKL shares) sized to this process's share of the cores.
void configure_threads() {
  const char* local = std::getenv("LOCAL_WORLD_SIZE");
  const int local_ranks = local ? std::max(1, std::atoi(local)) : 1;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(std::max(1, cores / local_ranks));
  at::set_num_interop_threads(1);
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
  try {
    configure_threads();
    if (command == "train") return tools::run_train(args);
    if (command == "eval") return tools::run_eval(args);
    if (command == "generate") return tools::run_generate(args);
    if (command == "info") return tools::run_info(args);
    if (command == "launch") return tools::run_launch(args);
    if (command == "plan") return tools::run_plan(args);
    throw UsageError("meshtrain: unknown command '" + command + "' (commands: train, eval, generate, info, launch, plan)");
  } catch (const UsageError& e) {
    std::cerr << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "meshtrain " << command << ": error: " << e.what() << "\n";
    return 1;
  }
}

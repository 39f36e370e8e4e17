// meshtrain launch: starts N local ranks of a meshtrain command (or of a program given by path)
// with the environment torchrun sets; the flags are checked here, the processes run in
// process_launcher.cpp.
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <iostream>

#include "tools/commands.h"
#include "tools/flags.h"
#include "tools/process_launcher.h"
#include "util/check.h"

namespace meshtrain::tools {
namespace {

constexpr int kMaxLocalRanks = 1024;

const char* kSynopsis =
    "-n N [--nnodes M --node_rank R --master_addr A --master_port P] [--timeout S] [--max_restarts K]\n"
    "    [--preemption_grace S] [--dump_on_stall S] -- COMMAND [ARGS...]\n\n"
    "Starts N processes on this node, as torchrun does: each gets RANK = node_rank*N + local rank,\n"
    "WORLD_SIZE = nnodes*N, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR, MASTER_PORT and\n"
    "MESHTRAIN_TIMEOUT_S. COMMAND is a meshtrain command (train, eval, ...) or, when it contains a\n"
    "'/', a program path. Rank 0's output passes through unchanged; the other ranks' lines are\n"
    "prefixed \"[rank R] \". When a rank fails the others are stopped and the launcher names the rank\n"
    "that failed first and exits with its code (128 + S for signal S), or restarts them all\n"
    "(--max_restarts). SIGTERM asks the ranks to checkpoint and stop (exit 0 when they all do).\n"
    "Each rank keeps a flight record of its last collectives, written to $MESHTRAIN_FLIGHT_DIR/\n"
    "flight_rank<R>.json; after a failure with a collective in flight, or a stall (--dump_on_stall),\n"
    "the launcher prints which ranks never entered which collective, and each rank's last step.";

// "-n N", "-nN" and "-n=N" become --nproc_per_node, so Flags can parse the rest.
std::vector<std::string> expand_short_flags(std::vector<std::string> args) {
  for (auto& a : args) {
    if (!a.starts_with("-n") || a.starts_with("--")) continue;
    const std::string rest = a.substr(2);
    a = "--nproc_per_node" + (rest.empty() || rest[0] == '=' ? rest : "=" + rest);
  }
  return args;
}

int int_in_range(const Flags& flags, const std::string& name, const std::string& shown, int64_t fallback,
                 int64_t lo, int64_t hi) {
  const int64_t v = flags.get_int(name, fallback);
  if (v < lo || v > hi)
    throw UsageError(str_cat("meshtrain launch: ", shown, " must be in [", lo, ", ", hi, "], got ", v));
  return static_cast<int>(v);
}

// This executable, for children that run a meshtrain command.
std::string self_path() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "/proc/self/exe";
}

}  // namespace

int run_launch(const Args& argv) {
  const auto sep = std::find(argv.begin(), argv.end(), std::string("--"));
  Flags flags("launch",
              {{"nproc_per_node", "-n: processes (ranks) to start on this node (required)"},
               {"nnodes", "number of nodes (default 1)"},
               {"node_rank", "this node's index in [0, nnodes) (default 0)"},
               {"master_addr", "address of rank 0's rendezvous store (default 127.0.0.1)"},
               {"master_port", "its port (default: a free port; required with --nnodes > 1)"},
               {"timeout", "seconds a collective or rendezvous may stall, as MESHTRAIN_TIMEOUT_S (default 300)"},
               {"max_restarts", "when a rank fails, restart all ranks up to this many times; `train` resumes from "
                                "the newest checkpoint (default 0)"},
               {"preemption_grace", "after SIGTERM, seconds the ranks have to save a checkpoint and stop before "
                                    "SIGKILL (default 60)"},
               {"dump_on_stall", "when no rank finished a collective for this many seconds, ask each for its "
                                 "flight record (SIGUSR1), print the diagnosis and stop the ranks, exit code 1 "
                                 "(default 0: off)"}},
              expand_short_flags(Args(argv.begin(), sep)));
  if (flags.help_requested()) {
    std::cout << flags.usage(kSynopsis);
    return 0;
  }
  if (!flags.positional().empty())
    throw UsageError(str_cat("meshtrain launch: unexpected argument '", flags.positional()[0],
                             "' (usage: meshtrain launch -n N [flags] -- COMMAND [ARGS...])"));
  if (!flags.has("nproc_per_node"))
    throw UsageError("meshtrain launch: -n N (--nproc_per_node) is required");

  LaunchPlan plan;
  plan.nproc_per_node = int_in_range(flags, "nproc_per_node", "-n", 1, 1, kMaxLocalRanks);
  plan.nnodes = int_in_range(flags, "nnodes", "--nnodes", 1, 1, INT_MAX / kMaxLocalRanks);
  const int64_t node_rank = flags.get_int("node_rank", 0);
  if (node_rank < 0 || node_rank >= plan.nnodes)
    throw UsageError(str_cat("meshtrain launch: --node_rank must be in [0, nnodes=", plan.nnodes, "), got ", node_rank));
  plan.node_rank = static_cast<int>(node_rank);
  plan.master_addr = flags.get("master_addr", "127.0.0.1");
  if (plan.master_addr.empty()) throw UsageError("meshtrain launch: --master_addr must not be empty");
  if (flags.has("master_port")) {
    plan.master_port = int_in_range(flags, "master_port", "--master_port", 0, 1, 65535);
  } else if (plan.nnodes > 1) {
    throw UsageError(str_cat("meshtrain launch: --master_port is required with --nnodes ", plan.nnodes,
                             " (every node must use the same one)"));
  }
  plan.timeout_s = int_in_range(flags, "timeout", "--timeout", 300, 1, INT_MAX);
  plan.max_restarts = int_in_range(flags, "max_restarts", "--max_restarts", 0, 0, 1000);
  plan.preemption_grace_s = int_in_range(flags, "preemption_grace", "--preemption_grace", 60, 1, 86400);
  plan.dump_on_stall_s = int_in_range(flags, "dump_on_stall", "--dump_on_stall", 0, 0, 86400);

  if (sep == argv.end() || sep + 1 == argv.end())
    throw UsageError("meshtrain launch: nothing to run (usage: meshtrain launch -n N [flags] -- COMMAND [ARGS...])");
  const Args command(sep + 1, argv.end());
  if (command[0].find('/') != std::string::npos) {
    plan.program = command[0];
    plan.argv = command;
  } else {
    plan.program = "/proc/self/exe";  // works even if the file was replaced since we started
    plan.argv = command;
    plan.argv.insert(plan.argv.begin(), self_path());
  }
  if (plan.master_port == 0) plan.master_port = find_free_port("127.0.0.1");
  return launch_ranks(plan);
}

}  // namespace meshtrain::tools

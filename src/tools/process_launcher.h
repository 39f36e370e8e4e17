// launch_ranks: starts this node's ranks as child processes with the environment torchrun sets,
// relays their output and waits; the first rank to fail takes the others down with it, so no
// child outlives the launcher.
#pragma once
#include <string>
#include <vector>

namespace meshtrain::tools {

struct LaunchPlan {
  int nproc_per_node = 1;  // local ranks on this node
  int nnodes = 1;
  int node_rank = 0;  // in [0, nnodes)
  std::string master_addr = "127.0.0.1";
  int master_port = 0;  // in [1, 65535]
  int timeout_s = 300;  // passed on as MESHTRAIN_TIMEOUT_S
  int max_restarts = 0;  // after a rank fails, restart all ranks this many times at most
  int preemption_grace_s = 60;  // after SIGTERM, how long the ranks have to checkpoint
  int dump_on_stall_s = 0;  // > 0: after that long without progress, collect flight records, diagnose, stop
  std::string program;  // path given to execv
  std::vector<std::string> argv;  // argv[0] included
};

// A TCP port that is free on `host` right now (bind to port 0 and read it back).
int find_free_port(const std::string& host);

// Runs the ranks to completion and returns the launcher's exit code: 0 when every rank exits 0;
// else the first failing rank's code (128 + S for signal S), after stopping the others (SIGTERM,
// then SIGKILL after 5 s), and after max_restarts restarts of all ranks (MESHTRAIN_RESTART_COUNT
// tells them). SIGINT / SIGHUP to the launcher are forwarded and end it with 128 + that signal;
// SIGTERM is forwarded as a preemption: 0 when every rank then checkpoints and exits 0 within
// preemption_grace_s. Throws Error when the processes cannot be started.
// Each rank writes its flight record to $MESHTRAIN_FLIGHT_DIR (the launcher's own value, else a
// directory of its own); after a failure with a collective in flight, and when no rank made
// progress for dump_on_stall_s (the records asked for with SIGUSR1, then exit code 1), the
// launcher prints the diagnosis (tools/flight_diagnosis.h).
int launch_ranks(const LaunchPlan& plan);

}  // namespace meshtrain::tools

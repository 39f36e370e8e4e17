// The flight recorder at the CLI edge: --flight_recorder_size, where the record goes
// ($MESHTRAIN_FLIGHT_DIR, else the command's output directory), a watcher thread that writes it on
// SIGUSR1 (the handler only wakes it) and keeps the progress file `launch --dump_on_stall` reads,
// the record after a failure, and the test-only skip hook. The one process-wide pointer to the
// recorder lives here, for the signal.
#pragma once
#include <string>

#include "dist/runtime.h"
#include "tools/flags.h"

namespace meshtrain::tools {

FlagSpec flight_recorder_flag_spec();
// Gives the runtime's mesh a recorder of --flight_recorder_size entries (none for 0, or for a
// single process) and starts the watcher. UsageError for a bad size or a bad test hook.
void start_flight_recorder(dist::Runtime& runtime, const Flags& flags);
// Where the record goes when $MESHTRAIN_FLIGHT_DIR is not set (train: its --output_dir).
void set_flight_fallback_dir(const std::string& dir);
// Writes the record now, if this process keeps one (main, after a failure).
void dump_flight_record(const std::string& reason);
// Stops the watcher and gives SIGUSR1 back its previous disposition.
void stop_flight_recorder();

}  // namespace meshtrain::tools

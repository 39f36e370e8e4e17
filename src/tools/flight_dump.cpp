#include "tools/flight_dump.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include "dist/flight_recorder.h"
#include "util/check.h"

namespace meshtrain::tools {

namespace {

constexpr int64_t kDefaultSize = 2048;
constexpr int64_t kMaxSize = 10'000'000;
// Test hook: "RANK:GROUP:N" makes rank RANK skip its Nth all-reduce on group GROUP.
constexpr const char* kSkipHook = "MESHTRAIN_TEST_SKIP_ALL_REDUCE";

int g_wake_fd = -1;  // the watcher's pipe; the SIGUSR1 handler writes one byte to it

void on_sigusr1(int) {
  const int saved = errno;
  const char byte = 'd';
  [[maybe_unused]] ssize_t w = ::write(g_wake_fd, &byte, 1);
  errno = saved;
}

struct Edge {
  std::shared_ptr<dist::FlightRecorder> recorder;
  std::string rank_file;  // flight_rank<R>.json
  int pipe[2] = {-1, -1};
  std::thread watcher;
  struct sigaction previous {};
  ~Edge() {
    if (watcher.joinable()) watcher.detach();  // a process leaving without stop_flight_recorder()
  }
};

Edge& edge() {
  static Edge e;
  return e;
}

// "<operations finished> <last step>", rewritten (by rename) whenever it changes.
void write_progress(const std::string& file, const dist::FlightRecorder& recorder, std::string& last) {
  if (file.empty() || recorder.finished() == 0) return;
  const std::string text = std::to_string(recorder.finished()) + " " + std::to_string(recorder.last_step()) + "\n";
  if (text == last) return;
  const std::string tmp = file + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    if (!out) return;
  }
  if (::rename(tmp.c_str(), file.c_str()) == 0) last = text;
}

void watch(std::shared_ptr<dist::FlightRecorder> recorder, int fd, std::string progress_file) {
  std::string last;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    const int n = ::poll(&p, 1, progress_file.empty() ? -1 : 250);
    if (n > 0) {
      char buf[64];
      const ssize_t k = ::read(fd, buf, sizeof buf);
      bool dump = false, quit = k == 0;
      for (ssize_t i = 0; i < k; ++i) (buf[i] == 'q' ? quit : dump) = true;
      if (dump) recorder->dump("SIGUSR1");
      if (quit) return;
    }
    write_progress(progress_file, *recorder, last);
  }
}

MeshDim group_named(const std::string& name) {
  for (const auto& dims : {std::vector<MeshDim>(kMeshDims.begin(), kMeshDims.end()),
                           std::vector<MeshDim>(kFlattenedDims.begin(), kFlattenedDims.end()),
                           std::vector<MeshDim>(kExpertDims.begin(), kExpertDims.end())})
    for (auto d : dims)
      if (name == name_of(d)) return d;
  throw UsageError(str_cat(kSkipHook, ": no group named '", name, "'"));
}

// The test hook, read here only: rank R silently skips its Nth all-reduce on a group.
void apply_skip_hook(dist::Runtime& runtime) {
  const char* spec = std::getenv(kSkipHook);
  if (!spec || !*spec) return;
  const std::string text = spec;
  const auto a = text.find(':'), b = text.rfind(':');
  int rank = -1;
  long long nth = 0;
  try {
    if (a == std::string::npos || a == b) throw std::invalid_argument("");
    rank = std::stoi(text.substr(0, a));
    nth = std::stoll(text.substr(b + 1));
  } catch (const std::exception&) {
    throw UsageError(str_cat(kSkipHook, " must be RANK:GROUP:N, got '", text, "'"));
  }
  if (nth < 1) throw UsageError(str_cat(kSkipHook, ": N must be at least 1, got ", nth));
  const MeshDim dim = group_named(text.substr(a + 1, b - a - 1));
  if (rank == runtime.env.rank) runtime.mesh->group(dim).skip_all_reduce_for_test(static_cast<uint64_t>(nth));
}

}  // namespace

FlagSpec flight_recorder_flag_spec() {
  return {"flight_recorder_size", "collectives each rank keeps in its flight record, written to "
                                  "flight_rank<R>.json on a time-out, SIGUSR1 or a failure; 0 turns it off "
                                  "(default 2048)"};
}

void start_flight_recorder(dist::Runtime& runtime, const Flags& flags) {
  const int64_t size = flags.get_int("flight_recorder_size", kDefaultSize);
  if (size < 0 || size > kMaxSize)
    throw UsageError(str_cat("--flight_recorder_size must be in [0, ", kMaxSize, "] (0 turns the recorder off), got ",
                             size));
  apply_skip_hook(runtime);
  if (size == 0 || runtime.env.world_size == 1) return;
  auto& e = edge();
  MT_CHECK(!e.recorder, "the flight recorder is started once per process");
  e.recorder = std::make_shared<dist::FlightRecorder>(static_cast<size_t>(size), runtime.env.rank,
                                                      runtime.env.world_size);
  e.rank_file = dist::flight_file_name(runtime.env.rank);
  if (const char* dir = std::getenv("MESHTRAIN_FLIGHT_DIR"); dir && *dir)
    e.recorder->set_dump_path(std::filesystem::path(dir) / e.rank_file);
  runtime.mesh->set_flight_recorder(e.recorder);

  MT_CHECK(::pipe2(e.pipe, O_CLOEXEC | O_NONBLOCK) == 0, "cannot create a pipe: ", std::strerror(errno));
  const char* progress = std::getenv("MESHTRAIN_PROGRESS_FILE");
  e.watcher = std::thread(watch, e.recorder, e.pipe[0], std::string(progress ? progress : ""));
  g_wake_fd = e.pipe[1];
  struct sigaction sa {};
  sa.sa_handler = on_sigusr1;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGUSR1, &sa, &e.previous);
}

void set_flight_fallback_dir(const std::string& dir) {
  auto& e = edge();
  if (!e.recorder || !e.recorder->dump_path().empty() || dir.empty()) return;
  e.recorder->set_dump_path(std::filesystem::path(dir) / e.rank_file);
}

void dump_flight_record(const std::string& reason) {
  if (auto& e = edge(); e.recorder) e.recorder->dump(reason);
}

void stop_flight_recorder() {
  auto& e = edge();
  if (!e.recorder) return;
  ::sigaction(SIGUSR1, &e.previous, nullptr);
  const char byte = 'q';
  [[maybe_unused]] ssize_t w = ::write(e.pipe[1], &byte, 1);
  e.watcher.join();
  g_wake_fd = -1;
  ::close(e.pipe[0]);
  ::close(e.pipe[1]);
  e.recorder.reset();
}

}  // namespace meshtrain::tools

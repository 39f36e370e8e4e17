// launch_ranks: fork + execve of the local ranks (each the leader of its own process group), one
// poll() loop over their pipes and a self-pipe that signals wake, and the stop sequence: SIGTERM
// to every rank's group, SIGKILL after 5 s. Nothing the launcher started survives it.
#include "tools/process_launcher.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "dist/flight_recorder.h"
#include "tools/flight_diagnosis.h"
#include "tools/rank_output.h"
#include "util/check.h"
#include "util/files.h"

extern char** environ;

namespace meshtrain::tools {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kGracePeriod = std::chrono::seconds(5);
constexpr auto kRecordWait = std::chrono::seconds(3);  // for the flight records after SIGUSR1
constexpr int kForwardedSignals[] = {SIGINT, SIGTERM, SIGHUP};

volatile sig_atomic_t g_signal = 0;  // the last forwarded signal the launcher received
int g_wake_fd = -1;                  // write end of the self-pipe that wakes poll()

void on_signal(int sig) {
  const int saved = errno;
  if (sig != SIGCHLD) g_signal = sig;
  if (g_wake_fd >= 0) {
    const char byte = 0;
    [[maybe_unused]] ssize_t w = ::write(g_wake_fd, &byte, 1);
  }
  errno = saved;
}

std::string errno_text() { return std::strerror(errno); }

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    reset(std::exchange(o.fd_, -1));
    return *this;
  }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// {read end, write end}, both close-on-exec so no rank inherits another's pipe.
std::pair<Fd, Fd> make_pipe(bool nonblocking) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC | (nonblocking ? O_NONBLOCK : 0)) != 0) fail("cannot create a pipe: ", errno_text());
  return {Fd(p[0]), Fd(p[1])};
}

// Handlers for the forwarded signals and SIGCHLD (all just wake poll()), SIGPIPE ignored;
// the previous dispositions come back when the launch ends.
class SignalScope {
 public:
  explicit SignalScope(int wake_fd) {
    g_signal = 0;
    g_wake_fd = wake_fd;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    for (size_t i = 0; i < std::size(kForwardedSignals); ++i) ::sigaction(kForwardedSignals[i], &sa, &old_[i]);
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    ::sigaction(SIGCHLD, &sa, &old_chld_);
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    ::sigaction(SIGPIPE, &ignore, &old_pipe_);
  }
  ~SignalScope() {
    for (size_t i = 0; i < std::size(kForwardedSignals); ++i) ::sigaction(kForwardedSignals[i], &old_[i], nullptr);
    ::sigaction(SIGCHLD, &old_chld_, nullptr);
    ::sigaction(SIGPIPE, &old_pipe_, nullptr);
    g_wake_fd = -1;
  }
  SignalScope(const SignalScope&) = delete;
  SignalScope& operator=(const SignalScope&) = delete;

 private:
  struct sigaction old_[std::size(kForwardedSignals)] {};
  struct sigaction old_chld_ {}, old_pipe_ {};
};

// One of a rank's output streams: the read end of its pipe and where its bytes go. Without a
// pipe (fd invalid) the rank writes straight to the launcher's own descriptor.
struct Stream {
  Fd fd;
  RankOutput relay;
};

struct Rank {
  int rank = 0;
  pid_t pid = -1;
  bool running = false;
  Stream out, err;
};

// Everything execve needs, built before fork: the child may only make async-signal-safe calls.
struct ExecImage {
  std::vector<std::string> env;
  std::vector<char*> argv, envp;
};

std::string error_file(const std::string& dir, int rank) { return dir + "/rank-" + std::to_string(rank) + ".json"; }
std::string progress_file(const std::string& dir, int rank) { return dir + "/progress-" + std::to_string(rank); }
std::string flight_file(const std::string& dir, int rank) { return dir + "/" + dist::flight_file_name(rank); }

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

ExecImage exec_image(const LaunchPlan& plan, int local_rank, const std::string& error_dir,
                     const std::string& flight_dir, int restart) {
  const int rank = plan.node_rank * plan.nproc_per_node + local_rank;
  const std::vector<std::pair<std::string, std::string>> vars = {
      {"RANK", std::to_string(rank)},
      {"WORLD_SIZE", std::to_string(plan.nnodes * plan.nproc_per_node)},
      {"LOCAL_RANK", std::to_string(local_rank)},
      {"LOCAL_WORLD_SIZE", std::to_string(plan.nproc_per_node)},
      {"GROUP_RANK", std::to_string(plan.node_rank)},
      {"GROUP_WORLD_SIZE", std::to_string(plan.nnodes)},
      {"MASTER_ADDR", plan.master_addr},
      {"MASTER_PORT", std::to_string(plan.master_port)},
      {"MESHTRAIN_TIMEOUT_S", std::to_string(plan.timeout_s)},
      {"MESHTRAIN_ERROR_FILE", error_file(error_dir, rank)},
      {"MESHTRAIN_RESTART_COUNT", std::to_string(restart)},
      {"MESHTRAIN_FLIGHT_DIR", flight_dir},
      // Only watched with --dump_on_stall: otherwise the ranks need not write it.
      {"MESHTRAIN_PROGRESS_FILE", plan.dump_on_stall_s > 0 ? progress_file(error_dir, rank) : ""},
  };
  ExecImage image;
  for (char** e = environ; e && *e; ++e) {
    const std::string entry = *e;
    const std::string name = entry.substr(0, entry.find('='));
    if (std::none_of(vars.begin(), vars.end(), [&](auto& v) { return v.first == name; }))
      image.env.push_back(entry);
  }
  for (auto& [name, value] : vars) image.env.push_back(name + "=" + value);
  for (auto& s : image.env) image.envp.push_back(s.data());
  image.envp.push_back(nullptr);
  for (auto& a : plan.argv) image.argv.push_back(const_cast<char*>(a.c_str()));
  image.argv.push_back(nullptr);
  return image;
}

// Forks one rank. In the child: default signal dispositions, its own process group, SIGKILL when
// the launcher dies, stdin from /dev/null, stdout / stderr onto the given descriptors.
pid_t spawn(const std::string& program, const ExecImage& image, int stdin_fd, int stdout_fd, int stderr_fd) {
  const std::string exec_failed = "meshtrain launch: cannot execute '" + program + "'\n";
  const pid_t parent = ::getpid();
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_BLOCK, &all, &old);  // no launcher handler may run in the child
  const pid_t pid = ::fork();
  if (pid == 0) {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGPIPE, SIGUSR1}) ::sigaction(s, &dfl, nullptr);
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);  // the launcher died before prctl
    ::dup2(stdin_fd, STDIN_FILENO);
    if (stdout_fd != STDOUT_FILENO) ::dup2(stdout_fd, STDOUT_FILENO);
    if (stderr_fd != STDERR_FILENO) ::dup2(stderr_fd, STDERR_FILENO);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(program.c_str(), image.argv.data(), image.envp.data());
    [[maybe_unused]] ssize_t w = ::write(STDERR_FILENO, exec_failed.data(), exec_failed.size());
    ::_exit(127);
  }
  const int fork_errno = errno;
  if (pid > 0) ::setpgid(pid, pid);  // also here, so a kill right after fork reaches the group
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) fail("cannot fork: ", std::strerror(fork_errno));
  return pid;
}

// Signals a rank's whole process group (its own children too), or the rank alone if the group
// is gone.
void signal_rank(const Rank& r, int sig) {
  if (r.pid <= 0) return;
  if (::kill(-r.pid, sig) != 0 && r.running) ::kill(r.pid, sig);
}

// Reads what is there now (at most one buffer); closes the stream at end of file.
void pump(Stream& s) {
  static char buf[64 * 1024];
  const ssize_t n = ::read(s.fd.get(), buf, sizeof buf);
  if (n > 0) {
    s.relay.feed(buf, static_cast<size_t>(n));
  } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
    s.relay.finish();
    s.fd.reset();
  }
}

// Reads until the pipe is empty; then ends the relay (a grandchild may still hold the pipe open).
void drain(Stream& s) {
  if (!s.fd.valid()) return;
  static char buf[64 * 1024];
  for (;;) {
    const ssize_t n = ::read(s.fd.get(), buf, sizeof buf);
    if (n > 0) {
      s.relay.feed(buf, static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;
    }
  }
  s.relay.finish();
  s.fd.reset();
}

class Launch {
 public:
  Launch(const LaunchPlan& plan, int restart) : plan_(plan), restart_(restart) {
    const char* dir = std::getenv("MESHTRAIN_FLIGHT_DIR");
    flight_dir_ = dir && *dir ? dir : error_dir_.path();
  }

  // Kills and reaps whatever is still running if we leave early (an exception).
  ~Launch() {
    for (auto& r : ranks_)
      if (r.running) signal_rank(r, SIGKILL);
    for (auto& r : ranks_)
      if (r.running) ::waitpid(r.pid, nullptr, 0);
  }

  int run() {
    auto [wake_read, wake_write] = make_pipe(/*nonblocking=*/true);
    Fd null_fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    MT_CHECK(null_fd.valid(), "cannot open /dev/null: ", errno_text());
    SignalScope signals(wake_write.get());
    start_ranks(null_fd.get());
    while (std::any_of(ranks_.begin(), ranks_.end(), [](const Rank& r) { return r.running; })) {
      wait_for_events(wake_read.get());
      reap();
      handle_signal();
      watch_progress();
      if (stop_deadline_ && !killed_ && Clock::now() >= *stop_deadline_) {
        for (auto& r : ranks_) signal_rank(r, SIGKILL);
        killed_ = true;
      }
    }
    if (stop_deadline_)  // sweep up what the ranks left behind in their groups
      for (auto& r : ranks_) signal_rank(r, SIGKILL);
    for (auto& r : ranks_) {
      drain(r.out);
      drain(r.err);
    }
    // A rank killed by a signal from outside (the OOM killer, kill -9, a crash) leaves no error
    // file; the others only saw its connections drop. Otherwise the earliest report names the cause.
    if (rank_failed_ && !killed_from_outside_) blame_first_failure();
    if (rank_failed_) diagnose_after_failure();
    if (preempting_ && !stopped_badly_) {
      exit_code_ = 0;
      message_ = "meshtrain launch: SIGTERM: every rank saved a checkpoint and stopped";
    }
    if (!message_.empty()) {
      message_ += "\n";
      write_all(STDERR_FILENO, message_.data(), message_.size());
    }
    return exit_code_;
  }

 private:
  void start_ranks(int null_fd) {
    const int first_rank = plan_.node_rank * plan_.nproc_per_node;
    ranks_.reserve(plan_.nproc_per_node);
    for (int local = 0; local < plan_.nproc_per_node; ++local) {
      const int rank = first_rank + local;
      std::error_code ignored;
      std::filesystem::remove(flight_file(flight_dir_, rank), ignored);  // an earlier run's record
      // Rank 0 passes through unchanged; when the launcher writes to a terminal, rank 0 gets that
      // terminal itself, so it sees a tty (progress bars) as it would when run alone.
      const std::string prefix = rank == 0 ? "" : "[rank " + std::to_string(rank) + "] ";
      Rank r{rank, -1, false, Stream{Fd(), RankOutput(STDOUT_FILENO, prefix)},
             Stream{Fd(), RankOutput(STDERR_FILENO, prefix)}};
      Fd out_write, err_write;
      if (rank != 0 || !::isatty(STDOUT_FILENO)) std::tie(r.out.fd, out_write) = make_pipe(/*nonblocking=*/false);
      if (rank != 0 || !::isatty(STDERR_FILENO)) std::tie(r.err.fd, err_write) = make_pipe(/*nonblocking=*/false);
      for (Fd* fd : {&r.out.fd, &r.err.fd})
        if (fd->valid()) ::fcntl(fd->get(), F_SETFL, ::fcntl(fd->get(), F_GETFL) | O_NONBLOCK);
      const ExecImage image = exec_image(plan_, local, error_dir_.path(), flight_dir_, restart_);
      r.pid = spawn(plan_.program, image, null_fd, out_write.valid() ? out_write.get() : STDOUT_FILENO,
                    err_write.valid() ? err_write.get() : STDERR_FILENO);
      r.running = true;
      ranks_.push_back(std::move(r));
    }
  }

  void wait_for_events(int wake_fd) {
    std::vector<pollfd> fds{{wake_fd, POLLIN, 0}};
    std::vector<Stream*> streams{nullptr};
    for (auto& r : ranks_)
      for (Stream* s : {&r.out, &r.err})
        if (s->fd.valid()) {
          fds.push_back({s->fd.get(), POLLIN, 0});
          streams.push_back(s);
        }
    // A safety net: SIGCHLD wakes us through the self-pipe. Progress is read at each wake.
    int timeout_ms = plan_.dump_on_stall_s > 0 ? 250 : 1000;
    if (stop_deadline_ && !killed_) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*stop_deadline_ - Clock::now());
      timeout_ms = static_cast<int>(std::clamp<int64_t>(left.count() + 1, 0, timeout_ms));
    }
    const int n = ::poll(fds.data(), fds.size(), timeout_ms);
    if (n < 0) {
      MT_CHECK(errno == EINTR, "poll failed: ", errno_text());
      return;
    }
    if (fds[0].revents) {
      char buf[256];
      while (::read(wake_fd, buf, sizeof buf) > 0) {
      }
    }
    for (size_t i = 1; i < fds.size(); ++i)
      if (fds[i].revents) pump(*streams[i]);
  }

  void reap() {
    for (auto& r : ranks_) {
      if (!r.running) continue;
      int status = 0;
      const pid_t got = ::waitpid(r.pid, &status, WNOHANG);
      if (got == 0 || (got < 0 && errno == EINTR)) continue;
      r.running = false;
      if (got < 0) status = 0;  // cannot happen for our own child; treat as gone
      const bool failed = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
      if (failed && stop_deadline_) stopped_badly_ = true;
      if (!failed || stop_deadline_) continue;  // ranks we stop are not the cause
      if (WIFSIGNALED(status)) {
        const int sig = WTERMSIG(status);
        killed_from_outside_ = true;
        exit_code_ = 128 + sig;
        message_ = str_cat("meshtrain launch: rank ", r.rank, " was killed by signal ", sig, " (",
                           strsignal(sig), ")");
      } else {
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
        message_ = str_cat("meshtrain launch: rank ", r.rank, " exited with code ", exit_code_);
      }
      if (exit_code_ == 0) exit_code_ = 1;
      rank_failed_ = true;
      begin_stop(SIGTERM);
    }
  }

  void handle_signal() {
    const int sig = g_signal;
    if (sig == 0) return;
    g_signal = 0;
    if (stop_deadline_) {  // a second signal while stopping: no more grace
      for (auto& r : ranks_) signal_rank(r, SIGKILL);
      killed_ = true;
      return;
    }
    exit_code_ = 128 + sig;
    message_ = str_cat("meshtrain launch: received signal ", sig, " (", strsignal(sig), "), stopped the ranks");
    // SIGTERM is a preemption: the ranks finish their step and save a checkpoint first.
    preempting_ = sig == SIGTERM;
    begin_stop(sig, preempting_ ? std::chrono::seconds(plan_.preemption_grace_s) : kGracePeriod);
  }

  // The ranks that failed left error files (tools/main.cpp); the earliest names the rank that
  // failed first, which may be another node's: that is the one to print, not the first exit seen.
  void blame_first_failure() {
    std::optional<nlohmann::json> first;
    for (auto& r : ranks_) {
      try {
        auto j = nlohmann::json::parse(util::read_file(error_file(error_dir_.path(), r.rank)));
        if (!first || j.at("time").template get<double>() < first->at("time").template get<double>()) first = j;
      } catch (const std::exception&) {  // no report: killed, or not a meshtrain command
      }
    }
    if (!first) return;
    try {
      message_ = str_cat("meshtrain launch: rank ", first->at("failed_rank").get<int>(), " failed: ",
                         first->at("message").get<std::string>(), " (", message_.substr(message_.find("rank ")), ")");
    } catch (const nlohmann::json::exception&) {
    }
  }

  // --dump_on_stall: each rank's progress file changes while its collectives finish. Once none has
  // changed for that long, the ranks are asked for their flight records (SIGUSR1 to the rank
  // itself), and after all answered or kRecordWait, the diagnosis is printed and the ranks killed.
  void watch_progress() {
    if (plan_.dump_on_stall_s <= 0 || stop_deadline_) return;
    const auto now = Clock::now();
    if (records_asked_) {
      if (all_records_written() || now - *records_asked_ >= kRecordWait) end_stall();
      return;
    }
    for (auto& r : ranks_) {
      std::ifstream in(progress_file(error_dir_.path(), r.rank));
      std::string text;
      if (!std::getline(in, text) || text == progress_[r.rank]) continue;
      progress_[r.rank] = text;
      last_progress_ = now;
    }
    if (!last_progress_ || now - *last_progress_ < std::chrono::seconds(plan_.dump_on_stall_s)) return;
    const std::string line = str_cat("meshtrain launch: no rank made progress for ", plan_.dump_on_stall_s,
                                     " s; asking every rank for its flight record (SIGUSR1)\n");
    write_all(STDERR_FILENO, line.data(), line.size());
    records_asked_ = now;
    records_asked_at_ = unix_now();
    for (auto& r : ranks_)
      if (r.running) ::kill(r.pid, SIGUSR1);
  }

  bool all_records_written() const {
    for (auto& r : ranks_) {
      if (!r.running) continue;
      try {
        auto j = nlohmann::json::parse(util::read_file(flight_file(flight_dir_, r.rank)));
        if (j.at("time").get<double>() < records_asked_at_) return false;
      } catch (const std::exception&) {
        return false;
      }
    }
    return true;
  }

  void end_stall() {
    print_diagnosis(read_records());
    diagnosed_ = true;
    exit_code_ = 1;
    message_ = str_cat("meshtrain launch: no rank made progress for ", plan_.dump_on_stall_s,
                       " s (--dump_on_stall); stopped the ranks");
    begin_stop(SIGKILL);
    killed_ = true;
  }

  // The records this node's ranks left (another node's, too, where the directory is shared).
  std::vector<FlightRecord> read_records() const {
    std::vector<FlightRecord> out;
    std::error_code ec;
    for (auto& entry : std::filesystem::directory_iterator(flight_dir_, ec)) {
      const auto name = entry.path().filename().string();
      if (!name.starts_with("flight_rank") || !name.ends_with(".json")) continue;
      try {
        out.push_back(parse_flight_record(nlohmann::json::parse(util::read_file(entry.path()))));
      } catch (const std::exception&) {  // not ours, or not a record: the diagnosis does without it
      }
    }
    return out;
  }

  void print_diagnosis(const std::vector<FlightRecord>& records) {
    std::vector<int> expected;
    for (auto& r : ranks_) expected.push_back(r.rank);
    std::string text;
    for (auto& line : diagnose_flights(records, expected)) text += "meshtrain launch: " + line + "\n";
    write_all(STDERR_FILENO, text.data(), text.size());
  }

  // After a rank failed: the records explain a collective left in flight (a time-out, a lost peer).
  void diagnose_after_failure() {
    if (diagnosed_) return;
    auto records = read_records();
    if (records_asked_ || any_in_flight(records)) print_diagnosis(records);
    diagnosed_ = true;
  }

  void begin_stop(int sig, std::chrono::seconds grace = kGracePeriod) {
    for (auto& r : ranks_) signal_rank(r, sig);
    for (auto& r : ranks_) signal_rank(r, SIGCONT);  // a stopped rank must run to act on it
    stop_deadline_ = Clock::now() + grace;
  }

 public:
  // Whether the launch ended because a rank failed (not a signal to the launcher).
  bool rank_failed() const { return rank_failed_; }

 private:

  const LaunchPlan& plan_;
  int restart_;                                   // 0 for the first start, as MESHTRAIN_RESTART_COUNT
  util::TempDir error_dir_{"meshtrain-launch"};  // the ranks' error files
  bool rank_failed_ = false;
  bool killed_from_outside_ = false;  // the first failure was a rank killed by a signal
  bool preempting_ = false;     // stopping after SIGTERM
  bool stopped_badly_ = false;  // a rank we were stopping did not exit 0
  std::vector<Rank> ranks_;
  std::string flight_dir_;                           // where the ranks write flight_rank<R>.json
  std::map<int, std::string> progress_;              // each rank's progress file, as last read
  std::optional<Clock::time_point> last_progress_;   // when a progress file last changed
  std::optional<Clock::time_point> records_asked_;   // when SIGUSR1 went out (--dump_on_stall)
  double records_asked_at_ = 0;                      // the same, Unix time (records carry it)
  bool diagnosed_ = false;                           // the diagnosis was printed
  std::optional<Clock::time_point> stop_deadline_;  // set once the ranks are being stopped
  bool killed_ = false;                             // SIGKILL sent
  int exit_code_ = 0;
  std::string message_;  // the one line printed at the end
};

}  // namespace

int find_free_port(const std::string& host) {
  Fd sock(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  MT_CHECK(sock.valid(), "cannot create a socket: ", errno_text());
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  MT_CHECK(::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) == 1, "'", host, "' is not an IPv4 address");
  MT_CHECK(::bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0, "cannot bind a TCP socket on ",
           host, ": ", errno_text());
  socklen_t len = sizeof addr;
  MT_CHECK(::getsockname(sock.get(), reinterpret_cast<sockaddr*>(&addr), &len) == 0, "getsockname failed: ",
           errno_text());
  return ntohs(addr.sin_port);
}

int launch_ranks(const LaunchPlan& plan) {
  MT_CHECK(plan.nproc_per_node >= 1 && plan.nnodes >= 1 && plan.node_rank >= 0 && plan.node_rank < plan.nnodes,
           "bad launch plan: nproc_per_node ", plan.nproc_per_node, ", nnodes ", plan.nnodes, ", node_rank ",
           plan.node_rank);
  MT_CHECK(plan.master_port >= 1 && plan.master_port <= 65535, "bad master port ", plan.master_port);
  MT_CHECK(!plan.argv.empty(), "nothing to launch");
  MT_CHECK(::access(plan.program.c_str(), X_OK) == 0, "cannot execute '", plan.program, "': ", errno_text());
  for (int restart = 0;; ++restart) {
    Launch launch(plan, restart);
    const int code = launch.run();
    if (code == 0 || !launch.rank_failed() || restart == plan.max_restarts) return code;
    const std::string line = str_cat("meshtrain launch: restarting the ranks (restart ", restart + 1, " of ",
                                     plan.max_restarts, ")\n");
    write_all(STDERR_FILENO, line.data(), line.size());
  }
}

}  // namespace meshtrain::tools

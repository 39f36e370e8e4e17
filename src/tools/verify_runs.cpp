#include "tools/verify_runs.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "util/check.h"
#include "util/files.h"

extern char** environ;

namespace meshtrain::tools {

namespace {

// What makes a process a rank of some job (dist/rank_env.cpp reads them); a child started with
// them would join that job instead of running its own.
constexpr std::array<const char*, 20> kRankVariables = {
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "MASTER_ADDR",
    "MASTER_PORT", "MESHTRAIN_ERROR_FILE", "MESHTRAIN_RESTART_COUNT", "TORCHELASTIC_RESTART_COUNT",
    "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE",
    "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE", "SLURM_LAUNCH_NODE_IPADDR"};

std::vector<std::string> child_environment() {
  std::vector<std::string> out;
  for (char** e = environ; e && *e; ++e) {
    const std::string entry = *e;
    const std::string name = entry.substr(0, entry.find('='));
    if (std::none_of(kRankVariables.begin(), kRankVariables.end(), [&](const char* v) { return name == v; }))
      out.push_back(entry);
  }
  return out;
}

// Exit status of argv run with its output into log (the child dies with us).
int run_to_log(const std::vector<std::string>& argv, const std::filesystem::path& log) {
  // Built before fork: libtorch's thread pools exist, so the child may only make async-signal-safe calls.
  auto env = child_environment();
  std::vector<char*> args, envp;
  for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  MT_CHECK(out >= 0, "cannot create ", log, ": ", util::errno_message(errno));
  const int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);
    if (in >= 0) ::dup2(in, STDIN_FILENO);
    ::dup2(out, STDOUT_FILENO);
    ::dup2(out, STDERR_FILENO);
    ::execve(args[0], args.data(), envp.data());
    constexpr char msg[] = "meshtrain verify: error: cannot execute the meshtrain binary\n";
    [[maybe_unused]] ssize_t w = ::write(STDERR_FILENO, msg, sizeof msg - 1);
    ::_exit(127);
  }
  const int fork_errno = errno;
  ::close(out);
  if (in >= 0) ::close(in);
  MT_CHECK(pid > 0, "cannot fork: ", util::errno_message(fork_errno));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    MT_CHECK(errno == EINTR, "waitpid failed: ", util::errno_message(errno));
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Fills the record from metrics.jsonl; an error when it is missing, malformed or short.
void read_metrics(const std::filesystem::path& file, int64_t steps, RunRecord& r) {
  std::ifstream in(file);
  if (!in) {
    r.error = "no " + file.filename().string() + " was written";
    return;
  }
  std::vector<double> rates;
  try {
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      const auto j = nlohmann::json::parse(line);
      r.losses.push_back(j.at("loss").get<double>());
      r.grad_norms.push_back(j.at("grad_norm").get<double>());
      rates.push_back(j.at("tokens_per_s").get<double>());
      if (j.contains("peak_memory_mib"))
        r.peak_memory_mib = std::max(r.peak_memory_mib.value_or(0.0), j["peak_memory_mib"].get<double>());
    }
  } catch (const nlohmann::json::exception& e) {
    r.error = str_cat(file.string(), ": ", e.what());
    return;
  }
  if (static_cast<int64_t>(r.losses.size()) != steps)
    r.error = str_cat("logged ", r.losses.size(), " of ", steps, " steps");
  if (rates.size() > 1) rates.erase(rates.begin());
  r.tokens_per_s = median(rates);
}

}  // namespace

RunRecord run_logged(const std::vector<std::string>& argv, const std::filesystem::path& log,
                     const std::filesystem::path& metrics_dir, int64_t steps) {
  RunRecord r;
  const auto start = std::chrono::steady_clock::now();
  const int code = run_to_log(argv, log);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (code != 0) {
    std::string text;
    try {
      text = util::read_file(log);
    } catch (const std::exception&) {
    }
    const auto line = error_line(text);
    r.error = str_cat("exit ", code, line.empty() ? "" : ": ", line);
    return r;
  }
  read_metrics(metrics_dir / "metrics.jsonl", steps, r);
  return r;
}

double max_relative_difference(const std::vector<double>& x, const std::vector<double>& reference) {
  double worst = 0.0;
  for (size_t i = 0; i < std::min(x.size(), reference.size()); ++i) {
    const double d = std::abs(x[i] / reference[i] - 1.0);
    if (!std::isfinite(d)) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, d);
  }
  return worst;
}

std::string error_line(const std::string& log_text) {
  std::istringstream in(log_text);
  std::string last, last_error;
  for (std::string line; std::getline(in, line);) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    last = line;
    if (line.find("error") != std::string::npos || line.find("failed") != std::string::npos) last_error = line;
  }
  return last_error.empty() ? last : last_error;
}

}  // namespace meshtrain::tools

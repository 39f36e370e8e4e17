// Runs a shell command for the tests (the CLI, and transformers through tests/tools/hf_check.py),
// capturing its exit code, stdout and stderr; whether a started process is still alive.
#pragma once
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace meshtrain::testing {

// The executable under test, the source tree, and the Python with transformers (required by CMake).
inline const std::string kBin = MESHTRAIN_BIN;
inline const std::string kSource = MESHTRAIN_SOURCE_DIR;
inline const std::string kPython = MESHTRAIN_PYTHON;

struct CommandResult {
  int exit_code;
  std::string out, err;
};

// Seconds from `start` until now.
inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline CommandResult run_command(const std::string& command) {
  static int counter = 0;
  auto base = std::filesystem::temp_directory_path() /
              ("mt_cmd_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  const std::string out = base.string() + ".out", err = base.string() + ".err";
  int status = std::system((command + " > " + out + " 2> " + err + " < /dev/null").c_str());
  CommandResult r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}

// Alive and not a zombie waiting for its (re)parent to reap it.
inline bool alive(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string s;
  std::getline(stat, s);
  const auto close = s.rfind(')');
  return !(close != std::string::npos && close + 2 < s.size() && s[close + 2] == 'Z');
}

// tests/tools/hf_check.py run by transformers' Python with the given arguments.
inline std::string hf_check_command(const std::string& args) {
  return kPython + " " + kSource + "/tests/tools/hf_check.py " + args;
}

// A value printed as "key: value" on its own line; NaN when absent.
inline double printed_value(const std::string& text, const std::string& key) {
  auto pos = text.find(key + ": ");
  if (pos == std::string::npos) return std::nan("");
  return std::stod(text.substr(pos + key.size() + 2));
}

// What transformers computes for the model saved in dir: max |logits - golden logits| on the
// golden inputs; NaN (which fails any comparison) when the check does not run.
inline double hf_logit_diff(const std::filesystem::path& dir, const std::filesystem::path& golden) {
  auto r = run_command(hf_check_command("golden " + dir.string() + " " + golden.string()));
  if (r.exit_code != 0) ADD_FAILURE() << "hf_check.py golden failed:\n" << r.out << r.err;
  return printed_value(r.out, "max_abs_logit_diff");
}

// A run's metrics.jsonl, one object per logged step.
inline std::vector<nlohmann::json> metrics_of(const std::filesystem::path& run_dir) {
  std::ifstream in(run_dir / "metrics.jsonl");
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

}  // namespace meshtrain::testing

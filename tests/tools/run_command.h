// Runs a shell command for the CLI tests, capturing its exit code, stdout and stderr.
#pragma once
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace meshtrain::testing {

// The executable under test, the source tree, and a Python with transformers ("" if none).
inline const std::string kBin = MESHTRAIN_BIN;
inline const std::string kSource = MESHTRAIN_SOURCE_DIR;
inline const std::string kPython = MESHTRAIN_PYTHON;

struct CommandResult {
  int exit_code;
  std::string out, err;
};

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

}  // namespace meshtrain::testing

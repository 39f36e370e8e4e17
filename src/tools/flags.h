// Command-line flags: `--name value` or `--name=value`, checked against the flags a command
// declares. Anything else is a UsageError (the CLI prints one line and exits with code 2).
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace meshtrain::tools {

struct FlagSpec {
  std::string name;
  std::string help;
  bool boolean = false;  // takes no value
};

class Flags {
 public:
  Flags(std::string command, std::vector<FlagSpec> specs, const std::vector<std::string>& args);

  bool help_requested() const { return help_; }
  std::string usage(const std::string& synopsis) const;

  bool has(const std::string& name) const { return values_.contains(name); }
  std::string get(const std::string& name, const std::string& fallback) const;
  int64_t get_int(const std::string& name, int64_t fallback) const;
  double get_double(const std::string& name, double fallback) const;
  std::string require(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }
  // Flags given, in order, with their values.
  const std::vector<std::pair<std::string, std::string>>& given() const { return given_; }

 private:
  std::string command_;
  std::vector<FlagSpec> specs_;
  std::map<std::string, std::string> values_;
  std::vector<std::pair<std::string, std::string>> given_;
  std::vector<std::string> positional_;
  bool help_ = false;
};

// A path given relative to the working directory, or else to the source tree (so the
// defaults work from any directory).
std::string resolve_path(const std::string& path);

}  // namespace meshtrain::tools

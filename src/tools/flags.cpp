#include "tools/flags.h"

#include <charconv>
#include <cmath>
#include <filesystem>
#include <sstream>

#include "util/check.h"

namespace meshtrain::tools {

Flags::Flags(std::string command, std::vector<FlagSpec> specs, const std::vector<std::string>& args)
    : command_(std::move(command)), specs_(std::move(specs)) {
  auto find = [&](const std::string& name) -> const FlagSpec* {
    for (auto& s : specs_)
      if (s.name == name) return &s;
    return nullptr;
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      help_ = true;
      continue;
    }
    if (!a.starts_with("--")) {
      positional_.push_back(a);
      continue;
    }
    auto eq = a.find('=');
    std::string name = a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    const FlagSpec* spec = find(name);
    if (!spec) throw UsageError(str_cat("meshtrain ", command_, ": unknown flag --", name, " (see --help)"));
    std::string value;
    if (eq != std::string::npos) {
      value = a.substr(eq + 1);
    } else if (spec->boolean) {
      value = "true";
    } else {
      if (i + 1 >= args.size())
        throw UsageError(str_cat("meshtrain ", command_, ": flag --", name, " needs a value"));
      value = args[++i];
    }
    values_[name] = value;
    given_.emplace_back(name, value);
  }
}

std::string Flags::usage(const std::string& synopsis) const {
  std::ostringstream out;
  out << "usage: meshtrain " << command_ << " " << synopsis << "\n\nflags:\n";
  for (auto& s : specs_) {
    std::string left = "  --" + s.name + (s.boolean ? "" : " X");
    out << left << std::string(left.size() < 34 ? 34 - left.size() : 1, ' ') << s.help << "\n";
  }
  return out.str();
}

std::string Flags::get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

std::string Flags::require(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) throw UsageError(str_cat("meshtrain ", command_, ": --", name, " is required"));
  return it->second;
}

int64_t Flags::get_int(const std::string& name, int64_t fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  int64_t out = 0;
  auto& v = it->second;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || end != v.data() + v.size())
    throw UsageError(str_cat("meshtrain ", command_, ": --", name, " expects an integer, got '", v, "'"));
  return out;
}

double Flags::get_double(const std::string& name, double fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  try {
    size_t used = 0;
    double out = std::stod(it->second, &used);
    if (used == it->second.size() && std::isfinite(out)) return out;
  } catch (const std::exception&) {
  }
  throw UsageError(str_cat("meshtrain ", command_, ": --", name, " expects a finite number, got '", it->second, "'"));
}

std::string resolve_path(const std::string& path) {
  namespace fs = std::filesystem;
  if (path.empty() || fs::path(path).is_absolute() || fs::exists(path)) return path;
  auto in_source = fs::path(MESHTRAIN_SOURCE_DIR) / path;
  return fs::exists(in_source) ? in_source.string() : path;
}

}  // namespace meshtrain::tools

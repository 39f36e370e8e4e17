#include "tools/axis_ticks.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "util/check.h"

namespace meshtrain::tools {
namespace {

// Slack for ranges that sit on a tick up to rounding (0.30000000000000004 is the tick 0.3).
constexpr double kSlack = 1e-9;

// k × m × 10^e, computed so that decimal ticks come out exact (0.3, not 3 × 0.1).
double tick_value(int64_t k, int m, int e) {
  const double v = e >= 0 ? static_cast<double>(k) * m * std::pow(10.0, e)
                          : static_cast<double>(k) * m / std::pow(10.0, -e);
  return v == 0 ? 0.0 : v;  // no "-0"
}

std::string printed(const char* format, int decimals, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, decimals, value);
  return buf;
}

}  // namespace

Ticks linear_ticks(double lo, double hi, int max_ticks) {
  MT_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo <= hi, "axis range [", lo, ", ", hi, "] is not finite and ordered");
  MT_CHECK(max_ticks >= 2, "an axis needs at least 2 ticks, got ", max_ticks);
  if (hi == lo) {
    const double pad = lo == 0 ? 1.0 : std::abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  // The smallest 1-2-5 step that covers [lo, hi] with at most max_ticks ticks.
  int e = static_cast<int>(std::floor(std::log10((hi - lo) / (max_ticks - 1)))) - 1;
  for (;; ++e) {
    for (int m : {1, 2, 5}) {
      const double step = tick_value(1, m, e);
      const auto first = static_cast<int64_t>(std::floor(lo / step + kSlack));
      const auto last = static_cast<int64_t>(std::ceil(hi / step - kSlack));
      if (last - first + 1 > max_ticks) continue;
      Ticks t;
      t.step = step;
      for (int64_t k = first; k <= last; ++k) t.values.push_back(tick_value(k, m, e));
      t.lo = t.values.front();
      t.hi = t.values.back();
      return t;
    }
  }
}

Ticks log_ticks(double lo, double hi, int max_ticks) {
  MT_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo > 0 && lo <= hi, "log axis range [", lo, ", ", hi,
           "] must be finite, positive and ordered");
  MT_CHECK(max_ticks >= 2, "an axis needs at least 2 ticks, got ", max_ticks);
  auto first = static_cast<int>(std::floor(std::log10(lo) + kSlack));
  auto last = static_cast<int>(std::ceil(std::log10(hi) - kSlack));
  if (last == first) ++last;
  int every = 1;
  for (int n : {1, 2, 3, 5, 10, 20, 50, 100}) {
    every = n;
    const int a = static_cast<int>(std::floor(first / double(n))), b = static_cast<int>(std::ceil(last / double(n)));
    if (b - a + 1 <= max_ticks) break;
  }
  first = static_cast<int>(std::floor(first / double(every))) * every;
  last = static_cast<int>(std::ceil(last / double(every))) * every;
  Ticks t;
  t.log = true;
  t.step = every;
  for (int d = first; d <= last; d += every) t.values.push_back(std::pow(10.0, d));
  if (every == 1)
    for (int d = first; d < last; ++d)
      for (int m = 2; m <= 9; ++m) t.minor.push_back(m * std::pow(10.0, d));
  t.lo = t.values.front();
  t.hi = t.values.back();
  return t;
}

bool wants_log_scale(const std::vector<double>& values, double factor) {
  double lo = INFINITY, hi = -INFINITY;
  for (double v : values) {
    if (std::isnan(v)) continue;
    if (v <= 0 || !std::isfinite(v)) return false;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  return lo <= hi && hi > factor * lo;
}

std::string tick_label(double value, const Ticks& ticks) {
  if (ticks.log) {
    const int d = static_cast<int>(std::lround(std::log10(value)));
    if (d >= -2 && d <= 3) return printed("%.*f", std::max(0, -d), value);
    return "1e" + std::to_string(d);
  }
  if (std::abs(value) < ticks.step * kSlack) return "0";
  const double largest = std::max(std::abs(ticks.lo), std::abs(ticks.hi));
  // Decimals the step needs in a unit: 0 for 5, 1 for 0.5, 2 for 0.01 (steps are 1-2-5 × 10^k).
  auto decimals = [&](double unit) {
    return std::max(0, -static_cast<int>(std::floor(std::log10(ticks.step / unit) + kSlack)));
  };
  if (largest >= 1e4 && ticks.step >= 100) {
    const double unit = largest >= 1e9 ? 1e9 : largest >= 1e6 ? 1e6 : 1e3;
    const char* suffix = unit == 1e9 ? "G" : unit == 1e6 ? "M" : "k";
    return printed("%.*f", decimals(unit), value / unit) + suffix;
  }
  if (ticks.step >= 1e-4) return printed("%.*f", decimals(1.0), value);
  // Tiny steps: mantissa and exponent, with the digits the step needs ("1.5e-4").
  const int e = static_cast<int>(std::floor(std::log10(std::abs(value)) + kSlack));
  const int step_e = static_cast<int>(std::floor(std::log10(ticks.step) + kSlack));
  return printed("%.*f", std::max(0, e - step_e), value / std::pow(10.0, e)) + "e" + std::to_string(e);
}

}  // namespace meshtrain::tools

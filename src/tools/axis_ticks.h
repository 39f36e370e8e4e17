// Axis ticks for the plots, as pure functions: linear axes step in 1-2-5 × 10^k and extend to
// whole steps; log axes tick every decade (or every few decades on a wide span).
#pragma once
#include <string>
#include <vector>

namespace meshtrain::tools {

struct Ticks {
  double lo = 0, hi = 1;       // the axis range, ticks included (log axes: the values, not their logs)
  std::vector<double> values;  // labelled ticks, ascending, within [lo, hi]
  std::vector<double> minor;   // log axes: 2..9 × 10^k between the decades (unlabelled)
  double step = 1;             // linear: the tick step; log: decades per tick
  bool log = false;
};

// At most max_ticks ticks over [lo, hi] (finite, lo <= hi), the smallest 1-2-5 step that allows it;
// a range of one value is widened around it.
Ticks linear_ticks(double lo, double hi, int max_ticks = 6);

// Decades covering [lo, hi] (0 < lo <= hi, finite); more than max_ticks decades step 2, 3, 5, ...
Ticks log_ticks(double lo, double hi, int max_ticks = 7);

// Log scale pays off when every value is > 0 and they span more than `factor`; NaNs are ignored.
bool wants_log_scale(const std::vector<double>& values, double factor = 10.0);

// A tick's text: as few digits as the step needs ("0.25", "1.5e-4", "20k"); log ticks: "0.01", "1e-5".
std::string tick_label(double value, const Ticks& ticks);

}  // namespace meshtrain::tools

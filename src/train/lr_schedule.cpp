#include "train/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace meshtrain::train {

double lr_multiplier(LrSchedulerType type, int64_t step, int64_t warmup, int64_t total) {
  const double s = static_cast<double>(step);
  if (type == LrSchedulerType::Constant) return 1.0;
  if (step < warmup) return s / static_cast<double>(std::max<int64_t>(1, warmup));
  const double decay_steps = static_cast<double>(std::max<int64_t>(1, total - warmup));
  const double progress = (s - static_cast<double>(warmup)) / decay_steps;
  switch (type) {
    // HF's form, which differs from 1 - progress when warmup == total (0 at the end, not 1).
    case LrSchedulerType::Linear: return std::max(0.0, static_cast<double>(total - step) / decay_steps);
    case LrSchedulerType::Cosine:
      return std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * progress)));
    default: return 1.0;
  }
}

}  // namespace meshtrain::train

#include "parallel/mixed_precision.h"

namespace meshtrain::parallel {

namespace {
constexpr at::DeviceType kDevices[2] = {at::kCPU, at::kCUDA};
}  // namespace

AutocastGuard::AutocastGuard(bool bf16) : active_(bf16) {
  if (!active_) return;
  for (int i = 0; i < 2; ++i) {
    was_enabled_[i] = at::autocast::is_autocast_enabled(kDevices[i]);
    was_dtype_[i] = at::autocast::get_autocast_dtype(kDevices[i]);
    at::autocast::set_autocast_enabled(kDevices[i], true);
    at::autocast::set_autocast_dtype(kDevices[i], at::kBFloat16);
  }
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
  // Leaving the outermost guard drops the bf16 copies of the weights it cached.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  for (int i = 0; i < 2; ++i) {
    at::autocast::set_autocast_enabled(kDevices[i], was_enabled_[i]);
    at::autocast::set_autocast_dtype(kDevices[i], was_dtype_[i]);
  }
}

bool autocast_bf16_enabled() {
  return at::autocast::is_autocast_enabled(at::kCPU) && at::autocast::get_autocast_dtype(at::kCPU) == at::kBFloat16;
}

}  // namespace meshtrain::parallel

// Learning-rate multipliers of Hugging Face's schedulers (get_scheduler): the rate used for
// optimizer step s (0-based) is learning_rate * lr_multiplier(type, s, warmup, total).
#pragma once
#include <cstdint>

#include "train/training_arguments.h"

namespace meshtrain::train {

double lr_multiplier(LrSchedulerType type, int64_t step, int64_t warmup_steps, int64_t total_steps);

}  // namespace meshtrain::train

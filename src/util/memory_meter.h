// Bytes of CPU tensors alive and their peak, counted by a wrapper around c10's CPU allocator:
// the CPU counterpart of torch.cuda.memory_allocated / max_memory_allocated. Process-wide, as
// the allocator is; tensors made before install_memory_meter() are not counted.
#pragma once
#include <c10/core/Device.h>

#include <cstdint>

namespace meshtrain::util {

void install_memory_meter();
bool memory_meter_installed();
int64_t memory_allocated();
int64_t max_memory_allocated();
// The peak restarts from what is allocated now.
void reset_peak_memory();
// On a GPU: torch.cuda.max_memory_allocated / reset_peak_memory_stats of that device (its
// caching allocator's); on the CPU the meter's.
int64_t max_memory_allocated(c10::Device device);
void reset_peak_memory(c10::Device device);

}  // namespace meshtrain::util

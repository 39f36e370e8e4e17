// The CPU memory meter counts what tensors hold, frees included, and keeps the peak.
#include <gtest/gtest.h>
#include <c10/core/CPUAllocator.h>
#include <torch/torch.h>

#include "util/memory_meter.h"

using namespace meshtrain;

TEST(MemoryMeter, CountsTensorsAndTheirPeak) {
  util::install_memory_meter();
  const int64_t before = util::memory_allocated();
  util::reset_peak_memory();
  {
    auto a = torch::empty({1000, 250});  // 1,000,000 bytes
    EXPECT_EQ(util::memory_allocated() - before, 1000000);
    auto b = torch::ones({500, 250}, torch::kFloat64);  // 1,000,000 bytes
    EXPECT_EQ(util::memory_allocated() - before, 2000000);
    EXPECT_EQ(util::max_memory_allocated() - before, 2000000);
    EXPECT_EQ(b.sum().item<double>(), 125000.0);  // the data is usable
  }
  EXPECT_EQ(util::memory_allocated(), before);
  util::reset_peak_memory();
  EXPECT_EQ(util::max_memory_allocated(), before);
}

TEST(MemoryMeter, RawAllocationsAreCountedAndFreed) {
  util::install_memory_meter();
  const int64_t before = util::memory_allocated();
  auto* allocator = c10::GetCPUAllocator();
  void* p = allocator->raw_allocate(4096);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
  EXPECT_EQ(util::memory_allocated() - before, 4096);
  allocator->raw_deallocate(p);
  EXPECT_EQ(util::memory_allocated(), before);
}

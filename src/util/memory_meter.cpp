#include "util/memory_meter.h"

#include <c10/core/CPUAllocator.h>
#ifdef MESHTRAIN_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <atomic>
#include <cstring>
#include <mutex>

namespace meshtrain::util {

namespace {

// Each block carries its size in a header as wide as c10's alignment, so the data stays aligned
// and the plain-pointer deleter that raw_allocate needs can find the size.
constexpr size_t kHeader = c10::gAlignment;

std::atomic<int64_t> g_allocated{0}, g_peak{0};
c10::Allocator* g_inner = nullptr;
c10::DeleterFnPtr g_inner_delete = nullptr;

void raise_peak(int64_t now) {
  int64_t peak = g_peak.load(std::memory_order_relaxed);
  while (now > peak && !g_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

void metered_delete(void* data) {
  auto* base = static_cast<char*>(data) - kHeader;
  size_t size;
  std::memcpy(&size, base, sizeof size);
  g_allocated.fetch_sub(static_cast<int64_t>(size), std::memory_order_relaxed);
  g_inner_delete(base);
}

struct MeteredAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    auto* base = static_cast<char*>(g_inner->raw_allocate(n + kHeader));
    std::memcpy(base, &n, sizeof n);
    raise_peak(g_allocated.fetch_add(static_cast<int64_t>(n), std::memory_order_relaxed) + static_cast<int64_t>(n));
    void* data = base + kHeader;
    return {data, data, &metered_delete, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &metered_delete; }
  void copy_data(void* dest, const void* src, size_t count) const override { default_copy_data(dest, src, count); }
};

}  // namespace

void install_memory_meter() {
  static std::once_flag once;
  std::call_once(once, [] {
    g_inner = c10::GetDefaultCPUAllocator();
    g_inner_delete = g_inner->raw_deleter();
    static MeteredAllocator metered;
    c10::SetCPUAllocator(&metered, /*priority=*/1);
  });
}

bool memory_meter_installed() { return g_inner != nullptr; }
int64_t memory_allocated() { return g_allocated.load(std::memory_order_relaxed); }
int64_t max_memory_allocated() { return g_peak.load(std::memory_order_relaxed); }
void reset_peak_memory() { g_peak.store(g_allocated.load(std::memory_order_relaxed), std::memory_order_relaxed); }

int64_t max_memory_allocated(c10::Device device) {
#ifdef MESHTRAIN_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
  }
#endif
  return max_memory_allocated();
}

void reset_peak_memory(c10::Device device) {
#ifdef MESHTRAIN_CUDA
  if (device.is_cuda()) return c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
#endif
  reset_peak_memory();
}

}  // namespace meshtrain::util

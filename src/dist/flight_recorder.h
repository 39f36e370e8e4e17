// The flight recorder: the last K collectives this rank issued (group, sequence number in that
// group, op, shape, dtype, bytes, start and end time) in a ring allocated once, plus the last step
// the trainer completed; written as JSON (flight_rank<R>.json) when a collective times out or when asked.
#pragma once
#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <array>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "util/mesh_dim.h"

namespace meshtrain::dist {

struct FlightEntry {
  static constexpr int kMaxDims = 6;  // a tensor of more dims keeps its first six (ndim says how many)
  uint64_t id = 0;                    // 1 + how many entries were recorded before it; 0: an empty slot
  MeshDim group{};
  uint64_t seq = 0;            // the operation's number in its group (1-based, Group::note_issued)
  const char* op = "";         // a string literal
  const void* work = nullptr;  // an async op's c10d::Work, matched again at its wait
  c10::ScalarType dtype = c10::ScalarType::Undefined;
  uint8_t ndim = 0;
  std::array<int64_t, kMaxDims> shape{};
  uint64_t bytes = 0;            // of the tensor handed to the backend
  int64_t step = 0;              // the last step completed when it was issued
  int64_t start_ns = 0;          // Unix time
  int64_t end_ns = 0;            // 0 while in flight (or after a failed wait)
};

class FlightRecorder {
 public:
  // capacity 0 records nothing (the ring is off) but still counts steps.
  FlightRecorder(size_t capacity, int rank, int world_size);

  size_t capacity() const { return ring_.size(); }
  // The members of a group, named in the dump so that records of different ranks can be joined.
  void add_group(MeshDim dim, std::vector<int> ranks);

  // Records an operation as it is issued; the token finishes it. No allocation: a slot is overwritten.
  uint64_t begin(MeshDim group, uint64_t seq, const char* op, const at::Tensor& t);
  void attach_work(uint64_t token, const void* work);  // an async op, finished by finish_work
  void finish(uint64_t token);
  void finish_work(MeshDim group, const void* work);

  void note_step(int64_t step) { last_step_.store(step, std::memory_order_relaxed); }
  int64_t last_step() const { return last_step_.load(std::memory_order_relaxed); }
  // Operations finished so far: the launcher's measure of progress.
  uint64_t finished() const { return finished_.load(std::memory_order_relaxed); }

  std::vector<FlightEntry> entries() const;  // oldest first
  nlohmann::json to_json(const std::string& reason) const;

  void set_dump_path(std::filesystem::path path);
  std::filesystem::path dump_path() const;
  // Writes to_json(reason) to the dump path, atomically; false without a path or on a write error.
  // Never throws: it runs on the way out of a failure.
  bool dump(const std::string& reason) const noexcept;

 private:
  FlightEntry* slot_of(uint64_t token);  // null once the slot was reused (or token 0); mutex held

  mutable std::mutex mutex_;
  std::vector<FlightEntry> ring_;
  uint64_t recorded_ = 0;  // entries ever recorded; the next goes to ring_[recorded_ % K]
  int rank_, world_size_;
  std::vector<std::pair<MeshDim, std::vector<int>>> groups_;
  std::array<uint64_t, 16> last_seq_{};  // per MeshDim: the highest sequence number issued
  std::atomic<int64_t> last_step_{0};
  std::atomic<uint64_t> finished_{0};
  std::filesystem::path dump_path_;
  mutable std::mutex dump_mutex_;  // one dump at a time (a timeout and a signal may coincide)
};

// "flight_rank3.json"
std::string flight_file_name(int rank);

}  // namespace meshtrain::dist

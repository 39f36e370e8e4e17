// A process group: the ranks of one mesh dim (or of several flattened dims) that include this
// rank, with its Gloo or NCCL backend and the bytes its collectives send. A group of size 1 has
// no backend, and every collective on it is a no-op.
#pragma once
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "dist/device.h"
#include "dist/flight_recorder.h"
#include "util/mesh_dim.h"

namespace meshtrain::dist {

class Group {
 public:
  // Creates the backend when ranks.size() > 1: every member must call this with the same dim
  // and ranks (the store key prefix is derived from them). Gloo peers connect over the
  // interfaces dist/network.h picks; NCCL binds the current CUDA device (dist/device.h).
  Group(MeshDim dim, std::vector<int> ranks, int global_rank, const c10::intrusive_ptr<c10d::Store>& store,
        std::chrono::milliseconds timeout, const std::string& master_addr, Backend backend = Backend::Gloo);
  // A group of this rank alone.
  static std::shared_ptr<Group> solo(MeshDim dim, int global_rank);
  // The ranks of a group without a backend, for laying a model out (meshtrain plan); any
  // collective on it is an error.
  static std::shared_ptr<Group> layout_only(MeshDim dim, std::vector<int> ranks, int global_rank);

  MeshDim dim() const { return dim_; }
  const char* name() const { return name_of(dim_); }
  int size() const { return static_cast<int>(ranks_.size()); }
  int rank() const { return index_; }  // position in the group
  int global_rank() const { return ranks_[index_]; }
  const std::vector<int>& ranks() const { return ranks_; }
  c10d::Backend& backend() const;
  // Where the backend's tensors live: cpu for Gloo, the bound GPU for NCCL. The collectives
  // move a tensor that lives elsewhere there and back (dist/collectives.h).
  c10::Device device() const { return device_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  // Operations issued on this group so far (the same order on every member), and the store
  // where a rank that stalls compares that count with the others' (dist/stall_report.h).
  uint64_t note_issued() { return ++ops_issued_; }
  uint64_t ops_issued() const { return ops_issued_; }
  c10d::Store* stall_store() const { return stall_store_.get(); }

  // Where this group's collectives are recorded (dist/flight_recorder.h); null: not recorded.
  FlightRecorder* flight() const { return flight_.get(); }
  void set_flight_recorder(std::shared_ptr<FlightRecorder> recorder) { flight_ = std::move(recorder); }

  // Test hook, set only by the CLI edge from a test-only variable: this rank silently skips its
  // nth all-reduce on this group (never entering it), to provoke a mismatched collective order.
  void skip_all_reduce_for_test(uint64_t nth) { skip_all_reduce_ = nth; }
  // Whether this all-reduce is the one to skip (counts the all-reduces when a skip is set).
  bool take_all_reduce_skip() { return skip_all_reduce_ != 0 && ++all_reduces_ == skip_all_reduce_; }

  // Bytes this rank sent, as the ring / pairwise algorithm of each collective counts them.
  void count_sent(uint64_t bytes) { bytes_sent_ += bytes; }
  uint64_t bytes_sent() const { return bytes_sent_; }
  void reset_bytes_sent() { bytes_sent_ = 0; }

 private:
  Group(MeshDim dim, std::vector<int> ranks, int global_rank);
  MeshDim dim_;
  std::vector<int> ranks_;
  int index_ = 0;
  std::chrono::milliseconds timeout_{300000};
  c10::Device device_ = c10::kCPU;
  c10::intrusive_ptr<c10d::Backend> backend_;
  c10::intrusive_ptr<c10d::Store> stall_store_;
  std::atomic<uint64_t> bytes_sent_{0}, ops_issued_{0};
  std::shared_ptr<FlightRecorder> flight_;
  uint64_t skip_all_reduce_ = 0, all_reduces_ = 0;
};

}  // namespace meshtrain::dist

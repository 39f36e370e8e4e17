#include "dist/flight_recorder.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "util/check.h"
#include "util/files.h"

namespace meshtrain::dist {

namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double seconds(int64_t ns) { return static_cast<double>(ns) / 1e9; }

size_t index_of(MeshDim dim) { return static_cast<size_t>(dim); }

// torch's Python names ("float32"), which the diagnosis prints.
std::string dtype_name(c10::ScalarType t) {
  using c10::ScalarType;
  switch (t) {
    case ScalarType::Float: return "float32";
    case ScalarType::Double: return "float64";
    case ScalarType::Half: return "float16";
    case ScalarType::BFloat16: return "bfloat16";
    case ScalarType::Long: return "int64";
    case ScalarType::Int: return "int32";
    case ScalarType::Short: return "int16";
    case ScalarType::Char: return "int8";
    case ScalarType::Byte: return "uint8";
    case ScalarType::Bool: return "bool";
    case ScalarType::Undefined: return "none";
    default: return c10::toString(t);
  }
}

}  // namespace

std::string flight_file_name(int rank) { return "flight_rank" + std::to_string(rank) + ".json"; }

FlightRecorder::FlightRecorder(size_t capacity, int rank, int world_size)
    : ring_(capacity), rank_(rank), world_size_(world_size) {}

void FlightRecorder::add_group(MeshDim dim, std::vector<int> ranks) {
  std::lock_guard lock(mutex_);
  for (auto& [d, r] : groups_)
    if (d == dim) {
      r = std::move(ranks);
      return;
    }
  groups_.emplace_back(dim, std::move(ranks));
}

uint64_t FlightRecorder::begin(MeshDim group, uint64_t seq, const char* op, const at::Tensor& t) {
  const int64_t start = now_ns();
  std::lock_guard lock(mutex_);
  auto& last = last_seq_[index_of(group)];
  last = std::max(last, seq);
  if (ring_.empty()) return 0;
  FlightEntry& e = ring_[recorded_ % ring_.size()];
  e.id = ++recorded_;
  e.group = group;
  e.seq = seq;
  e.op = op;
  e.work = nullptr;
  e.step = last_step();
  e.start_ns = start;
  e.end_ns = 0;
  if (t.defined()) {
    e.dtype = t.scalar_type();
    e.ndim = static_cast<uint8_t>(std::min<int64_t>(t.dim(), 255));
    for (int d = 0; d < std::min<int>(e.ndim, FlightEntry::kMaxDims); ++d) e.shape[d] = t.size(d);
    e.bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
  } else {
    e.dtype = c10::ScalarType::Undefined;
    e.ndim = 0;
    e.bytes = 0;
  }
  return e.id;
}

FlightEntry* FlightRecorder::slot_of(uint64_t token) {
  if (token == 0 || ring_.empty()) return nullptr;
  FlightEntry& e = ring_[(token - 1) % ring_.size()];
  return e.id == token ? &e : nullptr;
}

void FlightRecorder::attach_work(uint64_t token, const void* work) {
  std::lock_guard lock(mutex_);
  if (auto* e = slot_of(token)) e->work = work;
}

void FlightRecorder::finish(uint64_t token) {
  const int64_t end = now_ns();
  finished_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(mutex_);
  if (auto* e = slot_of(token)) e->end_ns = end;
}

void FlightRecorder::finish_work(MeshDim group, const void* work) {
  const int64_t end = now_ns();
  finished_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(mutex_);
  // Newest first: a wait follows its start closely (DDP's buckets are the deepest case).
  const uint64_t n = std::min<uint64_t>(recorded_, ring_.size());
  for (uint64_t k = 0; k < n; ++k) {
    FlightEntry& e = ring_[(recorded_ - 1 - k) % ring_.size()];
    if (e.work == work && e.group == group && e.end_ns == 0) {
      e.end_ns = end;
      e.work = nullptr;
      return;
    }
  }
}

std::vector<FlightEntry> FlightRecorder::entries() const {
  std::lock_guard lock(mutex_);
  std::vector<FlightEntry> out;
  const uint64_t n = std::min<uint64_t>(recorded_, ring_.size());
  out.reserve(n);
  for (uint64_t k = recorded_ - n; k < recorded_; ++k) out.push_back(ring_[k % ring_.size()]);
  return out;
}

nlohmann::json FlightRecorder::to_json(const std::string& reason) const {
  auto list = entries();
  nlohmann::json groups = nlohmann::json::array(), rows = nlohmann::json::array();
  uint64_t recorded;
  {
    std::lock_guard lock(mutex_);
    recorded = recorded_;
    for (auto& [dim, ranks] : groups_)
      groups.push_back({{"name", name_of(dim)}, {"ranks", ranks}, {"issued", last_seq_[index_of(dim)]}});
  }
  for (auto& e : list) {
    nlohmann::json shape = nlohmann::json::array();
    for (int d = 0; d < std::min<int>(e.ndim, FlightEntry::kMaxDims); ++d) shape.push_back(e.shape[d]);
    nlohmann::json j = {{"group", name_of(e.group)},
                        {"seq", e.seq},
                        {"op", e.op},
                        {"shape", shape},
                        {"dtype", dtype_name(e.dtype)},
                        {"bytes", e.bytes},
                        {"step", e.step},
                        {"start", seconds(e.start_ns)},
                        {"end", e.end_ns ? nlohmann::json(seconds(e.end_ns)) : nlohmann::json("not finished")}};
    if (e.ndim > FlightEntry::kMaxDims) j["ndim"] = e.ndim;
    rows.push_back(std::move(j));
  }
  return {{"rank", rank_},
          {"world_size", world_size_},
          {"pid", static_cast<int64_t>(::getpid())},
          {"reason", reason},
          {"time", seconds(now_ns())},
          {"last_step", last_step()},
          {"capacity", capacity()},
          {"recorded", recorded},
          {"groups", groups},
          {"entries", rows}};
}

void FlightRecorder::set_dump_path(std::filesystem::path path) {
  std::lock_guard lock(dump_mutex_);
  dump_path_ = std::move(path);
}

std::filesystem::path FlightRecorder::dump_path() const {
  std::lock_guard lock(dump_mutex_);
  return dump_path_;
}

bool FlightRecorder::dump(const std::string& reason) const noexcept {
  try {
    std::lock_guard lock(dump_mutex_);
    if (dump_path_.empty()) return false;
    if (dump_path_.has_parent_path()) std::filesystem::create_directories(dump_path_.parent_path());
    util::write_file_atomic(dump_path_, to_json(reason).dump() + "\n");
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace meshtrain::dist

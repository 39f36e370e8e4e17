#include "dist/failure_board.h"

#include <climits>
#include <mutex>
#include <thread>

#include "dist/collectives.h"
#include "util/check.h"

namespace meshtrain::dist {

namespace {

const std::string kKey = "meshtrain/first_failure";
const std::string kReported = "meshtrain/failures_reported";

struct Board {
  std::mutex mutex;
  c10::intrusive_ptr<c10d::Store> store;
  int rank = -1;
  int world_size = 1;
  std::shared_ptr<void> connections;
  bool reported = false;          // this rank reported already (collective_check, then main)
  std::optional<Failure> before;  // what it learned then: an earlier failure of another rank
};

Board& board() {
  static Board b;
  return b;
}

std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }

}  // namespace

void open_failure_board(const c10::intrusive_ptr<c10d::Store>& store, int rank, int world_size,
                        std::shared_ptr<void> connections) {
  std::lock_guard lock(board().mutex);
  board().store = store;
  board().rank = rank;
  board().world_size = world_size;
  board().connections = std::move(connections);
}

void close_failure_board() {
  std::lock_guard lock(board().mutex);
  board().connections.reset();
  board().store.reset();
}

std::optional<Failure> report_failure(const std::string& message) {
  std::lock_guard lock(board().mutex);
  auto& b = board();
  if (!b.store) return std::nullopt;
  if (b.reported) return b.before;
  b.reported = true;
  try {
    // "R\n<message>"; an empty expected value means: set only when the key does not exist.
    const auto stored = b.store->compareSet(kKey, {}, bytes(std::to_string(b.rank) + "\n" + message));
    b.store->add(kReported, 1);
    const std::string text(stored.begin(), stored.end());
    const auto newline = text.find('\n');
    if (newline == std::string::npos) return std::nullopt;
    Failure first{std::stoi(text.substr(0, newline)), text.substr(newline + 1)};
    if (first.rank != b.rank) b.before = first;
    return b.before;
  } catch (const std::exception&) {
    return std::nullopt;  // the store is gone with the rank that served it
  }
}

void wait_for_reports(std::chrono::milliseconds at_most) {
  std::lock_guard lock(board().mutex);
  auto& b = board();
  if (!b.store || b.rank != 0) return;
  const auto deadline = std::chrono::steady_clock::now() + at_most;
  try {
    while (b.store->add(kReported, 0) < b.world_size && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  } catch (const std::exception&) {
  }
}

void collective_check(Group& world, const std::function<void()>& check) {
  std::exception_ptr error;
  try {
    check();
  } catch (...) {
    error = std::current_exception();
  }
  if (world.size() == 1) {
    if (error) std::rethrow_exception(error);
    return;
  }
  if (error) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      report_failure(e.what());  // before the others learn of it, so they find it on the board
    }
  }
  auto first = at::full({1}, error ? world.global_rank() : INT_MAX, at::kInt);
  all_reduce_(world, first, c10d::ReduceOp::MIN);
  const int failed = first.item<int>();
  if (failed == INT_MAX) return;
  if (error) std::rethrow_exception(error);
  fail("rank ", failed, " failed");  // main prints that rank's error from the board
}

}  // namespace meshtrain::dist

// Where a failing rank leaves its error for the others: the first rank to fail records it in the
// rendezvous store (compare-and-set, so the first stays), and a rank whose own error is only a
// symptom (a closed connection, a failed collective) reports that first failure instead.
#pragma once
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "dist/group.h"

namespace meshtrain::dist {

struct Failure {
  int rank = -1;
  std::string message;
};

// Called once the store is up; without it (one process) the board records nothing. The board
// keeps `connections` (the process groups) open until it is closed, so that a failing rank's
// peers learn of its failure from the board before they see its connections drop.
void open_failure_board(const c10::intrusive_ptr<c10d::Store>& store, int rank, int world_size,
                        std::shared_ptr<void> connections);
void close_failure_board();

// Records this rank's failure unless one is already there; returns the earlier failure of another
// rank, or nothing when this one is the first (or the store cannot be reached).
std::optional<Failure> report_failure(const std::string& message);

// The rank that serves the store (rank 0) keeps it up after its own failure until every rank has
// reported, or `at_most` has passed, so that the others can still read the first failure.
void wait_for_reports(std::chrono::milliseconds at_most);

// Runs `check` on every rank of `world` and agrees on the outcome: when it throws anywhere, every
// rank throws, the first failing rank its own error, and main then reports that error on all.
void collective_check(Group& world, const std::function<void()>& check);

}  // namespace meshtrain::dist

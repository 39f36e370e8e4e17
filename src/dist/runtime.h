// Process-group bootstrap within --timeout: the TCPStore rendezvous on MASTER_ADDR:MASTER_PORT
// (rank 0 serves it), a check that every rank arrived (naming the ones that did not), the groups.
#pragma once
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <memory>

#include "dist/device_mesh.h"
#include "dist/rank_env.h"

namespace meshtrain::dist {

struct Runtime {
  RankEnv env;
  c10::intrusive_ptr<c10d::Store> store;  // null for a single process
  std::shared_ptr<DeviceMesh> mesh;
};

// A single process gets a mesh of solo groups and no store.
Runtime start_runtime(const RankEnv& env, const MeshSizes& sizes, std::chrono::milliseconds timeout,
                      Backend backend = Backend::Gloo);

// Every rank marks its arrival in the store, then waits for all others until the deadline;
// throws naming the ranks that never came (and the time-out the deadline came from).
void rendezvous(c10d::Store& store, int rank, int world_size, std::chrono::milliseconds timeout,
                std::chrono::steady_clock::time_point deadline);

}  // namespace meshtrain::dist

#include "dist/runtime.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <thread>

#include "dist/failure_board.h"
#include "dist/network.h"
#include "util/check.h"

namespace meshtrain::dist {

namespace {

using Clock = std::chrono::steady_clock;

std::chrono::milliseconds left_until(Clock::time_point deadline) {
  return std::max(std::chrono::milliseconds(1),
                  std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
}

// Rank 0 serves the store on MASTER_ADDR only, not on every interface; the others wait until it
// listens (the store's own client retries past its time-out), then connect.
c10::intrusive_ptr<c10d::Store> connect_store(const RankEnv& env, Clock::time_point deadline,
                                              std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions opts;
  opts.port = static_cast<uint16_t>(env.master_port);
  opts.isServer = env.rank == 0;
  opts.numWorkers = env.world_size;
  opts.waitWorkers = false;
  if (opts.isServer) opts.masterListenFd = listen_on(env.master_addr, env.master_port);
  try {
    if (!opts.isServer) wait_for_listener(env.master_addr, env.master_port, deadline, timeout);
    opts.timeout = std::max(std::chrono::milliseconds(1000), left_until(deadline));
    return c10::make_intrusive<c10d::TCPStore>(env.master_addr, opts);
  } catch (const std::exception& e) {
    fail("rank ", env.rank, ": cannot reach the rendezvous store at ", env.master_addr, ":", env.master_port, ": ",
         e.what());
  }
}

}  // namespace

void rendezvous(c10d::Store& store, int rank, int world_size, std::chrono::milliseconds timeout,
                Clock::time_point deadline) {
  store.set("arrived/" + std::to_string(rank), std::vector<uint8_t>{1});
  std::vector<int> missing;
  do {
    missing.clear();
    for (int r = 0; r < world_size; ++r)
      if (!store.check({"arrived/" + std::to_string(r)})) missing.push_back(r);
    if (missing.empty()) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  } while (Clock::now() < deadline);
  std::string list;
  for (int r : missing) list += (list.empty() ? "" : ", ") + std::to_string(r);
  fail("rank ", rank, ": rendezvous timed out after ", timeout.count() / 1000.0, " s; rank(s) ", list,
       " of ", world_size, " never arrived");
}

Runtime start_runtime(const RankEnv& env, const MeshSizes& sizes, std::chrono::milliseconds timeout,
                      Backend backend) {
  auto resolved = resolve_mesh_sizes(sizes, env.world_size);
  Runtime rt{env, {}, std::make_shared<DeviceMesh>(resolved, env.rank)};
  if (env.world_size == 1) return rt;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    auto tcp = connect_store(env, deadline, timeout);
    tcp->setTimeout(timeout);
    // Keys of this attempt only: a store still up from the previous one holds the old arrivals.
    rt.store = c10::make_intrusive<c10d::PrefixStore>("attempt" + std::to_string(env.restart), tcp);
    try {
      rendezvous(*rt.store, env.rank, env.world_size, timeout, deadline);
      break;
    } catch (const Error&) {
      throw;  // timed out
    } catch (const std::exception& e) {
      // The store went away: it was the lingering rank 0 of a run being restarted (launch
      // --max_restarts). Connect again, to the new one.
      if (env.rank == 0 || Clock::now() >= deadline)
        fail("rank ", env.rank, ": the rendezvous store at ", env.master_addr, ":", env.master_port, " failed: ", e.what());
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  rt.mesh->create_groups(rt.store, timeout, env.master_addr, backend);
  open_failure_board(rt.store, env.rank, env.world_size, rt.mesh);
  return rt;
}

}  // namespace meshtrain::dist

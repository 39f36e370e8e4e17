#include "dist/runtime.h"

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <thread>

#include "util/check.h"

namespace meshtrain::dist {

void rendezvous(c10d::Store& store, int rank, int world_size, std::chrono::milliseconds timeout) {
  store.set("arrived/" + std::to_string(rank), std::vector<uint8_t>{1});
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<int> missing;
  do {
    missing.clear();
    for (int r = 0; r < world_size; ++r)
      if (!store.check({"arrived/" + std::to_string(r)})) missing.push_back(r);
    if (missing.empty()) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  } while (std::chrono::steady_clock::now() < deadline);
  std::string list;
  for (int r : missing) list += (list.empty() ? "" : ", ") + std::to_string(r);
  fail("rank ", rank, ": rendezvous timed out after ", timeout.count() / 1000.0, " s; rank(s) ", list,
       " of ", world_size, " never arrived");
}

Runtime start_runtime(const RankEnv& env, const MeshSizes& sizes, std::chrono::milliseconds timeout) {
  auto resolved = resolve_mesh_sizes(sizes, env.world_size);
  Runtime rt{env, {}, std::make_shared<DeviceMesh>(resolved, env.rank)};
  if (env.world_size == 1) return rt;
  c10d::TCPStoreOptions opts;
  opts.port = static_cast<uint16_t>(env.master_port);
  opts.isServer = env.rank == 0;
  opts.numWorkers = env.world_size;
  opts.waitWorkers = false;
  opts.timeout = timeout;
  try {
    rt.store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, opts);
  } catch (const std::exception& e) {
    fail("rank ", env.rank, ": cannot reach the rendezvous store at ", env.master_addr, ":", env.master_port, ": ", e.what());
  }
  rendezvous(*rt.store, env.rank, env.world_size, timeout);
  rt.mesh->create_groups(rt.store, timeout, env.master_addr);
  return rt;
}

}  // namespace meshtrain::dist

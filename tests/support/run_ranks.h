// Runs a function as N ranks of one process, each on its own thread with its own device mesh
// over Gloo on loopback (a shared in-memory store), and rethrows the first rank's failure.
#pragma once
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "dist/device_mesh.h"

namespace meshtrain::testing {

inline void run_ranks(const dist::MeshSizes& sizes, const std::function<void(std::shared_ptr<dist::DeviceMesh>)>& fn) {
  const int world = static_cast<int>(sizes.product());
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::thread> threads;
  std::exception_ptr error;
  std::mutex mu;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        auto mesh = std::make_shared<dist::DeviceMesh>(sizes, r);
        mesh->create_groups(store, std::chrono::seconds(60), "127.0.0.1");
        fn(mesh);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!error) error = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  if (error) std::rethrow_exception(error);
}

inline std::string read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline dist::MeshSizes sizes(int64_t dp_replicate, int64_t dp_shard, int64_t cp = 1, int64_t sp = 1, int64_t tp = 1) {
  dist::MeshSizes s;
  s.dp_replicate = dp_replicate;
  s.dp_shard = dp_shard;
  s.cp = cp;
  s.sp = sp;
  s.tp = tp;
  return s;
}

}  // namespace meshtrain::testing

// What the flight recorder costs: the time of one entry (begin + finish) against an all-reduce of
// 4 KiB over Gloo on loopback between 2 ranks (threads), the smallest collective a step issues.
// Run: build/bench_flight_recorder
#include <torch/torch.h>

#include <chrono>
#include <cstdio>

#include "dist/collectives.h"
#include "dist/flight_recorder.h"
#include "support/run_ranks.h"

using namespace meshtrain;
using Clock = std::chrono::steady_clock;

int main() {
  dist::FlightRecorder rec(2048, 0, 2);
  auto t = at::zeros({1024});
  constexpr int kEntries = 200000, kAllReduces = 200;
  const auto start = Clock::now();
  for (int i = 0; i < kEntries; ++i) rec.finish(rec.begin(MeshDim::DpShard, i + 1, "all_reduce", t));
  const double entry_ns = std::chrono::duration<double, std::nano>(Clock::now() - start).count() / kEntries;
  double all_reduce_ns = 0;
  meshtrain::testing::run_ranks(meshtrain::testing::sizes(1, 2), [&](std::shared_ptr<dist::DeviceMesh> mesh) {
    auto& g = mesh->group(MeshDim::DpShard);
    auto x = at::zeros({1024});
    for (int i = 0; i < 20; ++i) dist::all_reduce_(g, x);  // warm-up
    const auto s = Clock::now();
    for (int i = 0; i < kAllReduces; ++i) dist::all_reduce_(g, x);
    if (mesh->rank() == 0) all_reduce_ns = std::chrono::duration<double, std::nano>(Clock::now() - s).count() / kAllReduces;
  });
  std::printf("flight recorder entry (begin + finish): %.0f ns\nall_reduce of 4 KiB on 2 ranks: %.0f ns\nratio: %.4f\n",
              entry_ns, all_reduce_ns, entry_ns / all_reduce_ns);
  return 0;
}

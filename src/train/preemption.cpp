#include "train/preemption.h"

#include "dist/collectives.h"

namespace meshtrain::train {

namespace {

volatile sig_atomic_t g_terminate = 0;

void on_sigterm(int) { g_terminate = 1; }

}  // namespace

PreemptionWatch::PreemptionWatch() {
  g_terminate = 0;
  struct sigaction sa {};
  sa.sa_handler = on_sigterm;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGTERM, &sa, &previous_);
}

PreemptionWatch::~PreemptionWatch() { ::sigaction(SIGTERM, &previous_, nullptr); }

bool PreemptionWatch::requested(dist::Group& world) const {
  if (world.size() == 1) return g_terminate != 0;
  auto flag = at::full({1}, g_terminate != 0 ? 1 : 0, at::kInt);
  dist::all_reduce_(world, flag, c10d::ReduceOp::MAX);
  return flag.item<int>() != 0;
}

}  // namespace meshtrain::train

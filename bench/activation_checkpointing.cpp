// Activation checkpointing's memory and time on one rank: llama-small at seq 2048 (batch 4,
// fp32), one training step (forward, backward) without checkpointing, every second layer
// (selective, every 2) and every layer (full). Each mode runs in its own process: after a warm-up
// step (gradients allocated) and malloc_trim, the peak RSS (VmHWM, reset through clear_refs) of a
// step minus the RSS before it is the step's activation memory; time is the mean of the steps.
// Run: build/bench_activation_checkpointing [steps]
#include <malloc.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

#include "llama_small.h"
#include "dist/device_mesh.h"
#include "nn/causal_lm_loss.h"
#include "parallel/parallelize.h"
#include "parallel/step_loss.h"

using namespace meshtrain;

namespace {

constexpr int64_t kSeq = 2048, kBatch = 4;

int64_t status_kb(const std::string& field) {  // from /proc/self/status
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
  return -1;
}

// One mode, in this process: "<activation MB> <seconds per step>".
void measure(const std::string& mode, int steps) {
  auto model = std::make_shared<models::LlamaForCausalLM>(bench::llama_small(false));
  model->init_weights(1);
  parallel::ParallelOptions options;
  options.ac_mode = parallel::parse_ac_mode(mode);
  options.ac_every = 2;
  parallel::ParallelModel pm(model, std::make_shared<dist::DeviceMesh>(dist::MeshSizes{}, 0), options);
  at::manual_seed(0);
  auto ids = at::randint(0, 256, {kBatch, kSeq});
  const std::vector<parallel::MicroBatch> batch = {{ids, nn::shift_labels(ids)}};
  parallel::step_loss(pm, batch, parallel::Pass::ForwardBackward);  // warm-up: gradients allocated
  malloc_trim(0);
  const int64_t before = status_kb("VmRSS");
  std::ofstream("/proc/self/clear_refs") << "5";  // resets VmHWM to the current RSS
  double seconds = 0;
  for (int s = 0; s < steps; ++s) {
    auto t0 = std::chrono::steady_clock::now();
    parallel::step_loss(pm, batch, parallel::Pass::ForwardBackward);
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  std::printf("%.1f %.3f\n", (status_kb("VmHWM") - before) / 1024.0, seconds / steps);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 2 && std::string(argv[1]) == "--mode") {
    measure(argv[2], argc > 3 ? std::atoi(argv[3]) : 2);
    return 0;
  }
  const int steps = argc > 1 ? std::atoi(argv[1]) : 2;
  std::printf("llama-small, seq %lld, batch %lld, fp32, one rank, %d threads, %d measured steps per mode\n",
              (long long)kSeq, (long long)kBatch, at::get_num_threads(), steps);
  std::printf("%-22s %16s %8s %12s %8s\n", "mode", "activations MB", "ratio", "step s", "ratio");
  double base_mb = 0, base_s = 0;
  for (auto [mode, label] : {std::pair{"none", "none"}, {"selective", "selective (every 2)"}, {"full", "full"}}) {
    const std::string command = "/proc/" + std::to_string(::getpid()) + "/exe --mode " + mode + " " + std::to_string(steps);
    FILE* child = popen(command.c_str(), "r");
    double mb = 0, s = 0;
    if (!child || std::fscanf(child, "%lf %lf", &mb, &s) != 2) {
      std::fprintf(stderr, "mode %s failed\n", mode);
      return 1;
    }
    pclose(child);
    if (base_mb == 0) base_mb = mb, base_s = s;
    std::printf("%-22s %16.1f %8.2f %12.3f %8.2f\n", label, mb, mb / base_mb, s, s / base_s);
  }
  return 0;
}

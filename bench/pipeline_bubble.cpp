// The pipeline bubble and activation memory of each schedule: P = 2 and 4 stages (one process
// per rank, one thread each, Gloo on loopback) train llama-small with 8 decoder layers on M = 4,
// 8 and 16 micro-batches of one 256-token row. Each rank's timeline (parallel/pipeline_timeline.h)
// splits its step into compute and time blocked in receives; idle is the step less compute, against
// the bubble (P-1)/(V*M+P-1), V stages per rank (2 for the interleaved schedules). Each rank's peak
// activation memory is the CPU allocator's peak during a step over what it held at the start
// (util/memory_meter.h), with the most micro-batches it held between forward and backward. Run: build/bench_pipeline_bubble [steps]
#include <netinet/in.h>
#include <sys/socket.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "llama_small.h"
#include "dist/collectives.h"
#include "dist/runtime.h"
#include "nn/causal_lm_loss.h"
#include "parallel/parallelize.h"
#include "parallel/pipeline_runner.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/pipeline_timeline.h"
#include "util/check.h"
#include "util/memory_meter.h"

using namespace meshtrain;

namespace {

// Every schedule name the pipeline knows; names refused as not implemented are listed as such.
const char* const kSchedules[] = {"GPipe", "1F1B", "Interleaved1F1B", "InterleavedZeroBubble", "ZBVZeroBubble"};

// Stages per rank: two for the interleaved schedules (P = 4 then holds one layer per stage).
int64_t virtual_stages(const std::string& schedule) { return schedule.rfind("Interleaved", 0) == 0 ? 2 : 1; }

constexpr int64_t kLayers = 8, kSeq = 256;

struct RankResult {
  double step_s = 0, compute_s = 0, wait_s = 0, peak_mb = 0;
  long long in_flight = 0;
};

// One rank, in this process: prints "<step s> <compute s> <wait s> <peak MB> <in flight>", means
// over the measured steps after one warm-up step (which allocates the gradients).
void run_rank(int rank, int world, int port, const std::string& schedule, int64_t micro_batches, int steps) {
  at::set_num_threads(1);
  util::install_memory_meter();
  dist::RankEnv env;
  env.rank = env.local_rank = rank;
  env.world_size = env.local_world_size = world;
  env.master_port = port;
  dist::MeshSizes sizes;
  sizes.pp = world;
  auto runtime = dist::start_runtime(env, sizes, std::chrono::seconds(120));
  auto json = bench::llama_small(false).raw;
  json["num_hidden_layers"] = kLayers;
  const auto config = models::LlamaConfig::from_json(json, "llama-small-8");
  auto model = std::make_shared<models::LlamaForCausalLM>(config);
  model->init_weights(1);
  parallel::ParallelOptions options;
  options.pp.schedule = parallel::parse_pipeline_schedule(schedule);
  options.pp.virtual_stages = virtual_stages(schedule);
  parallel::ParallelModel pm(model, runtime.mesh, options);
  at::manual_seed(0);
  std::vector<parallel::MicroBatch> batch;
  for (int64_t m = 0; m < micro_batches; ++m) {
    auto ids = at::randint(0, config.vocab_size, {1, kSeq});
    batch.push_back({ids, nn::shift_labels(ids)});
  }
  auto& pp = runtime.mesh->group(MeshDim::Pp);
  parallel::pipeline_step_loss(pm, batch, parallel::Pass::ForwardBackward);  // warm-up
  RankResult r;
  for (int s = 0; s < steps; ++s) {
    parallel::PipelineTimeline timeline;
    dist::barrier(pp);  // every stage starts the step together
    const int64_t held = util::memory_allocated();
    util::reset_peak_memory();
    const auto t0 = std::chrono::steady_clock::now();
    parallel::pipeline_step_loss(pm, batch, parallel::Pass::ForwardBackward, &timeline);
    r.step_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / steps;
    r.compute_s += timeline.compute_seconds() / steps;
    r.wait_s += timeline.seconds(parallel::PipelineTimeline::Span::Wait) / steps;
    r.peak_mb = std::max(r.peak_mb, static_cast<double>(util::max_memory_allocated() - held) / 1e6);
    r.in_flight = std::max<long long>(r.in_flight, timeline.peak_in_flight());
  }
  std::printf("%.6f %.6f %.6f %.3f %lld\n", r.step_s, r.compute_s, r.wait_s, r.peak_mb, r.in_flight);
}

int free_port() {  // the kernel's pick, released for rank 0 to take
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  MT_CHECK(fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
               ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0,
           "no free port on loopback");
  ::close(fd);
  return ntohs(addr.sin_port);
}

// P processes of this binary, one per rank.
std::vector<RankResult> launch(int world, const std::string& schedule, int64_t micro_batches, int steps) {
  const int port = free_port();
  std::vector<FILE*> children;
  for (int r = 0; r < world; ++r) {
    const std::string command = str_cat("/proc/", ::getpid(), "/exe --rank ", r, " ", world, " ", port, " ", schedule,
                                        " ", micro_batches, " ", steps);
    children.push_back(popen(command.c_str(), "r"));
    MT_CHECK(children.back(), "cannot start ", command);
  }
  std::vector<RankResult> out(world);
  bool ok = true;
  for (int r = 0; r < world; ++r) {
    auto& x = out[r];
    ok &= std::fscanf(children[r], "%lf %lf %lf %lf %lld", &x.step_s, &x.compute_s, &x.wait_s, &x.peak_mb,
                      &x.in_flight) == 5;
    ok &= pclose(children[r]) == 0;
  }
  MT_CHECK(ok, "a rank of ", schedule, " P ", world, " M ", micro_batches, " failed");
  return out;
}

std::string per_rank(const std::vector<RankResult>& ranks, double (*value)(const RankResult&), const char* format) {
  std::string s;
  char buf[32];
  for (auto& r : ranks) {
    std::snprintf(buf, sizeof buf, format, value(r));
    s += (s.empty() ? "" : "/") + std::string(buf);
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 8 && std::string(argv[1]) == "--rank") {
    try {
      run_rank(std::atoi(argv[2]), std::atoi(argv[3]), std::atoi(argv[4]), argv[5], std::atoll(argv[6]),
               std::atoi(argv[7]));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rank %s: %s\n", argv[2], e.what());
      return 1;
    }
    return 0;
  }
  const int steps = argc > 1 ? std::atoi(argv[1]) : 3;
  std::printf("llama-small with %lld layers, micro-batches of 1 x %lld tokens, fp32; one process and one thread per "
              "rank, %d measured steps after a warm-up; values per rank, stage 0 first\n",
              (long long)kLayers, (long long)kSeq, steps);
  std::printf("%-9s %2s %3s %7s %10s %-28s %-28s %-28s %-12s %7s\n", "schedule", "P", "M", "bubble", "idle mean",
              "idle (1 - compute/step)", "blocked in receives / step", "peak activations MB", "in flight", "step s");
  for (const char* name : kSchedules) {
    try {
      parallel::parse_pipeline_schedule(name);
    } catch (const UsageError& e) {
      std::printf("%-9s skipped: %s\n", name, e.what());
      continue;
    }
    for (int world : {2, 4})
      for (int64_t m : {4, 8, 16}) {
        auto ranks = launch(world, name, m, steps);
        double idle = 0, step = 0;
        for (auto& r : ranks) {
          idle += (1 - r.compute_s / r.step_s) / world;
          step = std::max(step, r.step_s);
        }
        std::printf("%-9s %2d %3lld %7.3f %10.3f %-28s %-28s %-28s %-12s %7.2f\n", name, world, (long long)m,
                    double(world - 1) / double(virtual_stages(name) * m + world - 1), idle,
                    per_rank(ranks, [](const RankResult& r) { return 1 - r.compute_s / r.step_s; }, "%.3f").c_str(),
                    per_rank(ranks, [](const RankResult& r) { return r.wait_s / r.step_s; }, "%.3f").c_str(),
                    per_rank(ranks, [](const RankResult& r) { return r.peak_mb; }, "%.1f").c_str(),
                    per_rank(ranks, [](const RankResult& r) { return double(r.in_flight); }, "%.0f").c_str(), step);
        std::fflush(stdout);
      }
  }
  return 0;
}

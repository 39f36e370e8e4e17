// The CUDA path, labelled `cuda` (ctest -L cuda; scripts/gpu_check.sh runs it on a lent GPU) and
// skipped where no GPU is visible: golden logits and gradients against transformers on the GPU
// (TF32 off), the loss curve of one GPU rank against the CPU's in fp32 and in bf16, DDP, FSDP,
// tensor, Ulysses, ring and pipeline parallelism and MoE expert parallelism on two ranks sharing
// the GPU over Gloo against one GPU rank, and the grouped expert GEMM against its loop.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "data/token_dataset.h"
#include "dist/device.h"
#include "io/safetensors.h"
#include "models/hf_weights.h"
#include "nn/causal_lm_loss.h"
#include "nn/moe.h"
#include "support/train_curve.h"

using namespace meshtrain;
using namespace meshtrain::testing;

namespace {

#define SKIP_WITHOUT_GPU() \
  if (dist::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU visible"

const c10::Device kGpu(c10::kCUDA, 0);

double max_rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return ((a.cpu() - b).abs().max() / b.abs().max().clamp_min(1e-12)).item<double>();
}

Curve train_on(const std::string& name, const dist::MeshSizes& mesh_sizes, c10::Device device, bool bf16 = false,
               const std::string& config = "configs/llama-tiny") {
  static auto data = data::open_token_dataset(std::filesystem::path(MESHTRAIN_SOURCE_DIR) / "data/corpus.txt");
  data->max_token();  // cached before the ranks share the dataset
  parallel::ParallelOptions o;
  o.device = device;
  o.bf16 = bf16;
  CurveRun how;
  how.data = data.get();
  how.config = config;
  how.steps = 10;
  return train_curve("cuda_" + name, mesh_sizes, o, how);
}

}  // namespace

TEST(Cuda, GoldenLogitsAndGradientsMatchTransformers) {
  SKIP_WITHOUT_GPU();
  at::globalContext().setAllowTF32CuBLAS(false);
  const auto dir = std::filesystem::path(MESHTRAIN_SOURCE_DIR) / "tests/golden/llama";
  auto model = models::load_pretrained(dir);
  model->to(kGpu);
  io::SafetensorsFile golden(dir / "golden.safetensors");
  auto input_ids = golden.read("input_ids").to(kGpu);
  auto logits = model->forward(input_ids);
  EXPECT_EQ(logits.device(), kGpu);
  EXPECT_LT(max_rel_diff(logits, golden.read("logits")), 1e-4);
  auto targets = nn::shift_labels(golden.read("labels").to(kGpu));
  auto loss = nn::cross_entropy_sum(logits, targets) / nn::count_targets(targets);
  EXPECT_NEAR(loss.item<double>(), golden.read("loss").item<double>(), 1e-4);
  loss.backward();
  for (auto& [name, p] : model->named_params()) {
    ASSERT_TRUE(p.grad().defined()) << name;
    EXPECT_LT(max_rel_diff(p.grad(), golden.read("grad." + name)), 1e-3) << name;
  }
}

TEST(Cuda, OneGpuRankFollowsTheCpuCurveInFp32AndBf16) {
  SKIP_WITHOUT_GPU();
  expect_curves_close(train_on("fp32", sizes(1, 1), kGpu), train_on("cpu_fp32", sizes(1, 1), c10::kCPU), 1e-4);
  expect_curves_close(train_on("bf16", sizes(1, 1), kGpu, true), train_on("cpu_bf16", sizes(1, 1), c10::kCPU, true),
                      1e-2, 0.1);
}

TEST(Cuda, LayoutsOnTwoRanksSharingTheGpuEqualOneGpuRank) {
  SKIP_WITHOUT_GPU();
  const auto one = train_on("single", sizes(1, 1), kGpu);
  expect_curves_close(train_on("ddp2", sizes(2, 1), kGpu), one, 1e-5);
  expect_curves_close(train_on("fsdp2", sizes(1, 2), kGpu), one, 1e-5);
  expect_curves_close(train_on("tp2", sizes(1, 1, 1, 1, 2), kGpu), one, 1e-5);
  expect_curves_close(train_on("sp2", sizes(1, 1, 1, 2), kGpu), one, 1e-5);
  expect_curves_close(train_on("cp2", sizes(1, 1, 2), kGpu), one, 1e-5);  // ring attention
  auto pp2 = sizes(1, 1);
  pp2.pp = 2;
  expect_curves_close(train_on("pp2", pp2, kGpu), one, 1e-5);
}

// Expert parallelism with all-to-all token dispatch (the split sizes read back on the host).
TEST(Cuda, ExpertParallelOnTwoRanksSharingTheGpuEqualsOneGpuRank) {
  SKIP_WITHOUT_GPU();
  auto ep2 = sizes(1, 2);
  ep2.ep = 2;
  expect_curves_close(train_on("moe_ep2", ep2, kGpu, false, "configs/mixtral-tiny"),
                      train_on("moe_single", sizes(1, 1), kGpu, false, "configs/mixtral-tiny"), 1e-5);
}

// Experts on the GPU: at::_grouped_mm where its kernels take the operands (bf16 on sm90), else the
// per-expert loop; both give the per-expert result, forward and backward.
TEST(Cuda, GroupedExpertGemmEqualsThePerExpertLoop) {
  SKIP_WITHOUT_GPU();
  for (auto dtype : {at::kBFloat16, at::kFloat}) {
    at::manual_seed(0);
    auto x = at::randn({40, 64}, at::TensorOptions(kGpu).dtype(dtype)).requires_grad_();
    auto w = at::randn({4, 32, 64}, at::TensorOptions(kGpu).dtype(dtype)).requires_grad_();
    const std::vector<int64_t> counts{7, 0, 21, 12};
    auto grouped = nn::grouped_linear(x, w, counts, nn::GemmPath::Auto);
    auto grads = torch::autograd::grad({grouped.sum()}, {x, w});
    auto loop = nn::grouped_linear(x, w, counts, nn::GemmPath::PerExpert);
    auto loop_grads = torch::autograd::grad({loop.sum()}, {x, w});
    const double tol = dtype == at::kFloat ? 1e-5 : 2e-2;
    EXPECT_LT(max_rel_diff(grouped.to(at::kFloat), loop.to(at::kFloat).cpu()), tol) << dtype;
    for (int i = 0; i < 2; ++i)
      EXPECT_LT(max_rel_diff(grads[i].to(at::kFloat), loop_grads[i].to(at::kFloat).cpu()), tol)
          << dtype << " gradient " << i;
  }
}

// The nn building blocks against naive references written out in float64: attention (values,
// log-sum-exp, gradients, GQA, head_dim not a power of two), RoPE, RMSNorm and the loss.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "nn/attention_core.h"
#include "nn/causal_lm_loss.h"
#include "nn/rms_norm.h"
#include "nn/rope.h"

using namespace meshtrain::nn;

namespace {

// softmax(q k^T * scale + causal mask) v, in float64, kv heads repeated for GQA.
std::pair<at::Tensor, at::Tensor> naive_attention(at::Tensor q, at::Tensor k, at::Tensor v, double scale) {
  const int64_t rep = q.size(1) / k.size(1);
  k = k.repeat_interleave(rep, 1);
  v = v.repeat_interleave(rep, 1);
  const int64_t T = q.size(2);
  auto scores = at::matmul(q, k.transpose(-1, -2)) * scale;
  auto mask = at::ones({T, T}, at::kBool).triu(1);
  scores = scores.masked_fill(mask, -std::numeric_limits<double>::infinity());
  auto lse = at::logsumexp(scores, -1);
  return {at::matmul(at::softmax(scores, -1), v), lse};
}

void expect_close(const at::Tensor& a, const at::Tensor& b, double tol, const char* what) {
  auto diff = (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
  EXPECT_LT(diff, tol) << what << ": max abs diff " << diff;
}

}  // namespace

TEST(Attention, MatchesNaiveValuesLseAndGradients) {
  for (auto [H, Hkv, T, d] : {std::tuple{4, 2, 37, 12}, {4, 4, 64, 16}, {6, 1, 130, 24}}) {
    at::manual_seed(T);
    auto q = at::randn({2, H, T, d}).requires_grad_();
    auto k = at::randn({2, Hkv, T, d}).requires_grad_();
    auto v = at::randn({2, Hkv, T, d}).requires_grad_();
    const double scale = 1.0 / std::sqrt(double(d));
    LocalCausalAttention core;
    auto res = core.forward(q, k, v, scale);
    auto gout = at::randn_like(res.out);
    auto grads = torch::autograd::grad({res.out}, {q, k, v}, {gout});

    auto q64 = q.detach().to(at::kDouble).requires_grad_();
    auto k64 = k.detach().to(at::kDouble).requires_grad_();
    auto v64 = v.detach().to(at::kDouble).requires_grad_();
    auto [ref, ref_lse] = naive_attention(q64, k64, v64, scale);
    auto ref_grads = torch::autograd::grad({ref}, {q64, k64, v64}, {gout.to(at::kDouble)});

    expect_close(res.out, ref, 1e-5, "output");
    expect_close(res.lse, ref_lse, 1e-5, "log-sum-exp");
    expect_close(grads[0], ref_grads[0], 1e-4, "dQ");
    expect_close(grads[1], ref_grads[1], 1e-4, "dK");
    expect_close(grads[2], ref_grads[2], 1e-4, "dV");
  }
}

TEST(Attention, RejectsHeadsThatAreNotAMultipleOfKvHeads) {
  LocalCausalAttention core;
  try {
    core.forward(at::randn({1, 3, 4, 8}), at::randn({1, 2, 4, 8}), at::randn({1, 2, 4, 8}), 1.0);
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("3 query heads are not a multiple of 2 kv heads"), std::string::npos)
        << e.what();
  }
}

TEST(Rope, RotatesEachPairByPositionTimesFrequency) {
  const int64_t d = 12, T = 9;
  const double theta = 10000.0;
  RotaryEmbedding rope(d, theta, {});
  auto pos = at::arange(T, at::kLong).unsqueeze(0) + 3;  // offset positions, as a shard has
  auto x = at::randn({1, 2, T, d}, at::kDouble);
  auto tables = rope.tables(pos, at::kDouble);
  auto got = apply_rotary(x, tables);
  // HF's rotate_half pairs element i with i + d/2.
  auto want = x.clone();
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < d / 2; ++i) {
      double angle = double(t + 3) / std::pow(theta, 2.0 * i / d);
      auto a = x.select(2, t).select(-1, i), b = x.select(2, t).select(-1, i + d / 2);
      want.select(2, t).select(-1, i).copy_(a * std::cos(angle) - b * std::sin(angle));
      want.select(2, t).select(-1, i + d / 2).copy_(b * std::cos(angle) + a * std::sin(angle));
    }
  expect_close(got, want, 1e-4, "rope");  // fp32 frequencies, as HF computes them
}

TEST(Rope, LinearScalingDividesFrequencies) {
  RotaryEmbedding plain(8, 10000.0, {});
  RopeScaling s;
  s.type = RopeScaling::Type::Linear;
  s.factor = 4.0;
  RotaryEmbedding scaled(8, 10000.0, s);
  expect_close(scaled.inv_freq() * 4.0, plain.inv_freq(), 1e-9, "linear scaling");
}

TEST(Rope, Llama3ScalingKeepsHighAndScalesLowFrequencies) {
  RopeScaling s;
  s.type = RopeScaling::Type::Llama3;
  s.factor = 8.0;
  s.low_freq_factor = 1.0;
  s.high_freq_factor = 4.0;
  s.original_max_position_embeddings = 64;
  RotaryEmbedding plain(64, 500000.0, {}), scaled(64, 500000.0, s);
  auto f = plain.inv_freq(), g = scaled.inv_freq();
  for (int64_t i = 0; i < f.size(0); ++i) {
    double wavelen = 2 * M_PI / f[i].item<double>();
    if (wavelen < 64 / 4.0) EXPECT_FLOAT_EQ(g[i].item<float>(), f[i].item<float>());
    else if (wavelen > 64 / 1.0) EXPECT_FLOAT_EQ(g[i].item<float>(), f[i].item<float>() / 8.0f);
    else {
      double smooth = (64 / wavelen - 1.0) / 3.0;
      double want = (1 - smooth) * f[i].item<double>() / 8 + smooth * f[i].item<double>();
      EXPECT_NEAR(g[i].item<double>(), want, 1e-6 * want);
    }
  }
}

TEST(RMSNorm, MatchesFormulaAndCastsBeforeTheWeight) {
  RMSNorm norm(16, 1e-5);
  {
    at::NoGradGuard g;
    norm.weight.copy_(at::randn({16}));
  }
  auto x = at::randn({3, 5, 16});
  auto x64 = x.to(at::kDouble);
  auto want = norm.weight.to(at::kDouble) * x64 / at::sqrt(x64.pow(2).mean(-1, true) + 1e-5);
  expect_close(norm.forward(x), want, 1e-5, "rmsnorm fp32");
  // bf16 input: normalised in fp32, rounded to bf16, then the weight multiply.
  auto xb = x.to(at::kBFloat16);
  auto xb32 = xb.to(at::kFloat);
  auto normed = (xb32 * at::rsqrt(xb32.pow(2).mean(-1, true) + 1e-5)).to(at::kBFloat16);
  EXPECT_TRUE(at::equal(norm.forward(xb), norm.weight * normed));
}

TEST(Loss, ShiftedTokenWeightedCrossEntropy) {
  auto logits = at::randn({2, 6, 11});
  auto labels = at::randint(0, 11, {2, 6});
  labels[0][2] = kIgnoreIndex;
  auto targets = shift_labels(labels);
  EXPECT_TRUE(at::equal(targets.slice(1, 0, 5), labels.slice(1, 1)));
  EXPECT_EQ(targets[0][5].item<int64_t>(), kIgnoreIndex);
  double want = 0;
  int64_t count = 0;
  auto logp = at::log_softmax(logits.to(at::kDouble), -1);
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t < 5; ++t) {
      int64_t y = labels[b][t + 1].item<int64_t>();
      if (y == kIgnoreIndex) continue;
      want -= logp[b][t][y].item<double>();
      ++count;
    }
  EXPECT_EQ(count_targets(targets), count);
  EXPECT_NEAR(cross_entropy_sum(logits, targets).item<double>(), want, 1e-4);
}

TEST(Loss, AllIgnoredGivesZeroNotNan) {
  auto targets = at::full({1, 4}, kIgnoreIndex, at::kLong);
  auto s = cross_entropy_sum(at::randn({1, 4, 5}), targets);
  EXPECT_EQ(s.item<double>(), 0.0);
  EXPECT_EQ(count_targets(targets), 0);
}

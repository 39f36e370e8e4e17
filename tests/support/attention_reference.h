// Shared by the attention-core tests: local causal attention on the full sequence as the
// reference (outputs, lse and the gradients of a random weighting), small Llama configs, and
// the checks the tests make.
#pragma once
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "models/llama_config.h"
#include "nn/attention_core.h"
#include "util/check.h"

namespace meshtrain::testing {

inline void expect_close(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  EXPECT_TRUE(at::allclose(got, want, 1e-5, 1e-5))
      << what << ": max difference " << (got - want).abs().max().item<double>();
}
template <typename Fn>
void expect_error(Fn&& fn, const std::string& text) {
  try {
    fn();
    FAIL() << "expected an error containing: " << text;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
}
// Serial attention on the full sequence with a random output weighting as the loss.
struct Reference {
  at::Tensor q, k, v, w;           // inputs and the loss weights
  at::Tensor out, lse, dq, dk, dv;  // results
  double scale;
};

inline Reference serial_attention(int64_t B, int64_t H, int64_t Hkv, int64_t T, int64_t d, uint64_t seed) {
  at::manual_seed(seed);
  Reference r;
  r.q = at::randn({B, H, T, d});
  r.k = at::randn({B, Hkv, T, d});
  r.v = at::randn({B, Hkv, T, d});
  r.w = at::randn({B, H, T, d});
  r.scale = 1.0 / std::sqrt(static_cast<double>(d));
  auto q = r.q.clone().requires_grad_(), k = r.k.clone().requires_grad_(), v = r.v.clone().requires_grad_();
  auto res = nn::LocalCausalAttention().forward(q, k, v, r.scale);
  (res.out * r.w).sum().backward();
  r.out = res.out.detach();
  r.lse = res.lse;
  r.dq = q.grad();
  r.dk = k.grad();
  r.dv = v.grad();
  return r;
}

inline models::LlamaConfig config_with(int64_t heads, int64_t kv, int64_t head_dim) {
  auto j = models::LlamaConfig::load(std::filesystem::path(MESHTRAIN_SOURCE_DIR) / "configs/llama-tiny").raw;
  j["num_attention_heads"] = heads;
  j["num_key_value_heads"] = kv;
  j["head_dim"] = head_dim;
  j["hidden_size"] = heads * head_dim;
  j["intermediate_size"] = 40;
  return models::LlamaConfig::from_json(j, "test");
}

}  // namespace meshtrain::testing

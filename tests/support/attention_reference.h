// Shared by the attention-core tests: local causal attention on the full sequence as the
// reference (outputs, lse and the gradients of a random weighting), also with packed documents,
// and the checks the tests make.
#pragma once
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

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

// Random q, k, v and loss weights; `attend` gives out and lse of the leaves q, k, v, and the
// gradients of sum(out * w) fill the rest.
template <typename Attend>
Reference reference_of(int64_t B, int64_t H, int64_t Hkv, int64_t T, int64_t d, uint64_t seed, Attend&& attend) {
  at::manual_seed(seed);
  Reference r;
  r.q = at::randn({B, H, T, d});
  r.k = at::randn({B, Hkv, T, d});
  r.v = at::randn({B, Hkv, T, d});
  r.w = at::randn({B, H, T, d});
  r.scale = 1.0 / std::sqrt(static_cast<double>(d));
  auto q = r.q.clone().requires_grad_(), k = r.k.clone().requires_grad_(), v = r.v.clone().requires_grad_();
  nn::AttentionResult res = attend(q, k, v, r.scale);
  (res.out * r.w).sum().backward();
  r.out = res.out.detach();
  r.lse = res.lse;
  r.dq = q.grad();
  r.dk = k.grad();
  r.dv = v.grad();
  return r;
}

inline Reference serial_attention(int64_t B, int64_t H, int64_t Hkv, int64_t T, int64_t d, uint64_t seed) {
  return reference_of(B, H, Hkv, T, d, seed, [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                double scale) { return nn::LocalCausalAttention().forward(q, k, v, scale); });
}

// The same, with packed rows: document_ids [B, T] (nondecreasing per row), each document
// attended on its own by causal attention, one at a time.
inline Reference serial_document_attention(int64_t B, int64_t H, int64_t Hkv, int64_t T, int64_t d, uint64_t seed,
                                           const at::Tensor& document_ids) {
  auto each_document = [&](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
    std::vector<at::Tensor> outs, lses;
    for (int64_t b = 0; b < B; ++b) {
      std::vector<at::Tensor> row_out, row_lse;
      for (int64_t s = 0; s < T;) {
        int64_t e = s + 1;
        while (e < T && document_ids[b][e].item<int64_t>() == document_ids[b][s].item<int64_t>()) ++e;
        auto doc = [&](const at::Tensor& t) { return t.narrow(0, b, 1).narrow(2, s, e - s); };
        auto res = nn::LocalCausalAttention().forward(doc(q), doc(k), doc(v), scale);
        row_out.push_back(res.out);
        row_lse.push_back(res.lse);
        s = e;
      }
      outs.push_back(at::cat(row_out, 2));
      lses.push_back(at::cat(row_lse, 2));
    }
    return nn::AttentionResult{at::cat(outs, 0), at::cat(lses, 0)};
  };
  return reference_of(B, H, Hkv, T, d, seed, each_document);
}

// document_ids [rows, sum of lengths]: row i holds documents of the lengths lengths[i], in order.
inline at::Tensor documents_of_lengths(const std::vector<std::vector<int64_t>>& lengths) {
  std::vector<at::Tensor> rows;
  for (auto& row : lengths) {
    std::vector<int64_t> ids;
    for (size_t doc = 0; doc < row.size(); ++doc) ids.insert(ids.end(), row[doc], static_cast<int64_t>(doc));
    rows.push_back(at::tensor(ids, at::kLong));
  }
  return at::stack(rows).contiguous();
}

}  // namespace meshtrain::testing

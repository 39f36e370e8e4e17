// Rotary position embeddings with Hugging Face's conventions: inverse frequencies in fp32
// (default, linear and llama3 scaling), cos/sin of cat(freqs, freqs) and rotate_half.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

namespace meshtrain::nn {

struct RopeScaling {
  enum class Type { Default, Linear, Llama3 };
  Type type = Type::Default;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct RopeTables {
  at::Tensor cos, sin;  // [B, T, d], in the activations' dtype
};

class RotaryEmbedding {
 public:
  RotaryEmbedding(int64_t head_dim, double theta, const RopeScaling& scaling);
  // position_ids [B, T] (global positions; a sequence shard passes its own)
  RopeTables tables(const at::Tensor& position_ids, at::ScalarType dtype) const;
  const at::Tensor& inv_freq() const { return inv_freq_; }  // [d/2], fp32

 private:
  at::Tensor inv_freq_;
};

// x [B, H, T, d] -> x * cos + rotate_half(x) * sin, with cos/sin broadcast over heads.
at::Tensor apply_rotary(const at::Tensor& x, const RopeTables& rope);

}  // namespace meshtrain::nn

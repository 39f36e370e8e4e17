#include "nn/rope.h"

#include <cmath>
#include <numbers>

namespace meshtrain::nn {

namespace {

at::Tensor llama3_inv_freq(const at::Tensor& inv_freq, const RopeScaling& s) {
  const double old_len = static_cast<double>(s.original_max_position_embeddings);
  const double low_freq_wavelen = old_len / s.low_freq_factor;
  const double high_freq_wavelen = old_len / s.high_freq_factor;
  auto wavelen = 2 * std::numbers::pi / inv_freq;
  auto scaled = at::where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq);
  auto smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
  auto smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
  auto is_medium = (wavelen >= high_freq_wavelen).logical_and(wavelen <= low_freq_wavelen);
  return at::where(is_medium, smoothed, scaled);
}

at::Tensor rotate_half(const at::Tensor& x) {
  auto halves = x.chunk(2, -1);
  return at::cat({-halves[1], halves[0]}, -1);
}

}  // namespace

RotaryEmbedding::RotaryEmbedding(int64_t head_dim, double theta, const RopeScaling& scaling) {
  auto exponents = at::arange(0, head_dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(head_dim);
  inv_freq_ = 1.0 / at::pow(theta, exponents);
  if (scaling.type == RopeScaling::Type::Linear) inv_freq_ = inv_freq_ / scaling.factor;
  if (scaling.type == RopeScaling::Type::Llama3) inv_freq_ = llama3_inv_freq(inv_freq_, scaling);
}

RopeTables RotaryEmbedding::tables(const at::Tensor& position_ids, at::ScalarType dtype) const {
  auto inv = inv_freq_.to(position_ids.device());
  auto freqs = position_ids.to(at::kFloat).unsqueeze(-1) * inv;  // [B, T, d/2]
  auto emb = at::cat({freqs, freqs}, -1);
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

at::Tensor apply_rotary(const at::Tensor& x, const RopeTables& rope) {
  auto cos = rope.cos.unsqueeze(1);
  auto sin = rope.sin.unsqueeze(1);
  return x * cos + rotate_half(x) * sin;
}

}  // namespace meshtrain::nn

// The LinearStyle seam: how a Linear or Embedding computes with its (possibly sharded) weight
// and talks to the rest of the mesh. Tensor and sequence parallel styles replace the local op
// with their collectives around it; the serial default is the plain op. Styles hold no
// per-call state.
#pragma once
#include <ATen/ATen.h>

#include <memory>

namespace meshtrain::nn {

struct LinearStyle {
  virtual ~LinearStyle() = default;
  // x [..., in] -> [..., out] with weight [out, in] and an optional bias [out].
  virtual at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) const {
    return at::linear(x, weight, bias);
  }
  // ids [B, T] -> [B, T, D] with weight [V, D].
  virtual at::Tensor embedding(const at::Tensor& ids, const at::Tensor& weight) const {
    return at::embedding(weight, ids);
  }
};

inline std::shared_ptr<LinearStyle> identity_style() {
  static auto style = std::make_shared<LinearStyle>();
  return style;
}

}  // namespace meshtrain::nn

// The LinearStyle seam: how a Linear or Embedding talks to the rest of the mesh. Tensor and
// sequence parallel styles transform the input before the local op and the output after it;
// the serial default leaves both untouched.
#pragma once
#include <ATen/ATen.h>

#include <memory>

namespace meshtrain::nn {

struct LinearStyle {
  virtual ~LinearStyle() = default;
  virtual at::Tensor prepare_input(const at::Tensor& x) const { return x; }
  virtual at::Tensor prepare_output(const at::Tensor& y) const { return y; }
};

inline std::shared_ptr<LinearStyle> identity_style() {
  static auto style = std::make_shared<LinearStyle>();
  return style;
}

}  // namespace meshtrain::nn

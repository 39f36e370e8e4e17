#include "nn/linear.h"

namespace meshtrain::nn {

Linear::Linear(int64_t in_features, int64_t out_features, bool with_bias) {
  weight = register_parameter("weight", at::empty({out_features, in_features}));
  if (with_bias) bias = register_parameter("bias", at::zeros({out_features}));
}

at::Tensor Linear::forward(const at::Tensor& x) {
  return style_->linear(x, weight, bias);
}

Embedding::Embedding(int64_t num_embeddings, int64_t dim) {
  weight = register_parameter("weight", at::empty({num_embeddings, dim}));
}

at::Tensor Embedding::forward(const at::Tensor& ids) {
  return style_->embedding(ids, weight);
}

}  // namespace meshtrain::nn

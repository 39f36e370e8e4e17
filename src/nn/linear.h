// Linear and Embedding with HF parameter names (weight [out, in], optional bias [out];
// embedding weight [V, D]) and the LinearStyle seam around the local op.
#pragma once
#include <torch/nn/module.h>

#include <memory>

#include "nn/linear_style.h"

namespace meshtrain::nn {

class Linear : public torch::nn::Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias);
  at::Tensor forward(const at::Tensor& x);  // [..., in] -> [..., out]
  void set_style(std::shared_ptr<LinearStyle> style) { style_ = std::move(style); }

  at::Tensor weight, bias;

 private:
  std::shared_ptr<LinearStyle> style_ = identity_style();
};

class Embedding : public torch::nn::Module {
 public:
  Embedding(int64_t num_embeddings, int64_t dim);
  at::Tensor forward(const at::Tensor& ids);  // [B, T] -> [B, T, D]
  void set_style(std::shared_ptr<LinearStyle> style) { style_ = std::move(style); }

  at::Tensor weight;

 private:
  std::shared_ptr<LinearStyle> style_ = identity_style();
};

}  // namespace meshtrain::nn

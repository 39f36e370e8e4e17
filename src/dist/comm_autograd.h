// Collectives that autograd sees: each is a forward/backward pair on one group, and the
// identity on a group of size 1. These are the Megatron f/g conjugates and their relatives.
#pragma once
#include <ATen/ATen.h>

#include <vector>

#include "dist/group.h"

namespace meshtrain::dist {

// forward: identity / backward: all-reduce (sum) of the gradient.  ("f": enter a parallel region)
at::Tensor copy_to_group(const at::Tensor& x, Group& g);
// forward: all-reduce (sum) / backward: identity.  ("g": leave a parallel region)
at::Tensor reduce_from_group(const at::Tensor& x, Group& g);
// forward: all-gather along dim (uneven sizes allowed) / backward: this rank's slice of the
// gradient (each rank's copy of the output receives the full downstream gradient).
at::Tensor gather_from_group(const at::Tensor& x, Group& g, int64_t dim, const std::vector<int64_t>& sizes);
// forward: this rank's slice along dim / backward: all-gather of the gradient.
at::Tensor scatter_to_group(const at::Tensor& x, Group& g, int64_t dim, const std::vector<int64_t>& sizes);
// forward: all-gather along dim / backward: reduce-scatter (sequence parallel's pair).
at::Tensor all_gather_autograd(const at::Tensor& x, Group& g, int64_t dim, const std::vector<int64_t>& sizes);
// forward: reduce-scatter along dim / backward: all-gather.
at::Tensor reduce_scatter_autograd(const at::Tensor& x, Group& g, int64_t dim, const std::vector<int64_t>& sizes);
// forward: all-to-all of rows (dim 0) / backward: the reverse all-to-all.
at::Tensor all_to_all_autograd(const at::Tensor& x, Group& g, const std::vector<int64_t>& send_sizes,
                               const std::vector<int64_t>& recv_sizes);

// torch.chunk sizes of n over parts: ceil(n / parts) each, the tail possibly smaller or empty.
std::vector<int64_t> chunk_sizes(int64_t n, int64_t parts);

}  // namespace meshtrain::dist

#include "dist/comm_autograd.h"

#include <torch/csrc/autograd/custom_function.h>

#include <numeric>

#include "dist/collectives.h"

namespace meshtrain::dist {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

int64_t offset_of(const std::vector<int64_t>& sizes, int index) {
  return std::accumulate(sizes.begin(), sizes.begin() + index, int64_t{0});
}

at::Tensor my_slice(const at::Tensor& x, const Group& g, int64_t dim, const std::vector<int64_t>& sizes) {
  return x.narrow(dim, offset_of(sizes, g.rank()), sizes[g.rank()]).contiguous();
}

Group* group_of(AutogradContext* ctx) { return reinterpret_cast<Group*>(ctx->saved_data["group"].toInt()); }

void save(AutogradContext* ctx, Group& g, int64_t dim, const std::vector<int64_t>& sizes) {
  ctx->saved_data["group"] = reinterpret_cast<int64_t>(&g);
  ctx->saved_data["dim"] = dim;
  ctx->saved_data["sizes"] = sizes;
}

int64_t dim_of(AutogradContext* ctx) { return ctx->saved_data["dim"].toInt(); }
std::vector<int64_t> sizes_of(AutogradContext* ctx) { return ctx->saved_data["sizes"].toIntVector(); }

struct CopyTo : torch::autograd::Function<CopyTo> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Group* g) {
    save(ctx, *g, 0, {});
    return x.view_as(x);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    auto gx = grad[0].contiguous().clone();
    all_reduce_(*group_of(ctx), gx);
    return {gx, at::Tensor()};
  }
};

struct ReduceFrom : torch::autograd::Function<ReduceFrom> {
  static at::Tensor forward(AutogradContext*, const at::Tensor& x, Group* g) {
    auto y = x.contiguous().clone();
    all_reduce_(*g, y);
    return y;
  }
  static variable_list backward(AutogradContext*, variable_list grad) { return {grad[0], at::Tensor()}; }
};

struct GatherFrom : torch::autograd::Function<GatherFrom> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Group* g, int64_t dim, std::vector<int64_t> sizes) {
    save(ctx, *g, dim, sizes);
    return all_gather_uneven(*g, x, dim, sizes);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    return {my_slice(grad[0], *group_of(ctx), dim_of(ctx), sizes_of(ctx)), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct ScatterTo : torch::autograd::Function<ScatterTo> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Group* g, int64_t dim, std::vector<int64_t> sizes) {
    save(ctx, *g, dim, sizes);
    return my_slice(x, *g, dim, sizes);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    return {all_gather_uneven(*group_of(ctx), grad[0].contiguous(), dim_of(ctx), sizes_of(ctx)), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

struct AllGatherRS : torch::autograd::Function<AllGatherRS> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Group* g, int64_t dim, std::vector<int64_t> sizes) {
    save(ctx, *g, dim, sizes);
    return all_gather_uneven(*g, x, dim, sizes);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    return {reduce_scatter_uneven(*group_of(ctx), grad[0].contiguous(), dim_of(ctx), sizes_of(ctx)), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

struct ReduceScatterAG : torch::autograd::Function<ReduceScatterAG> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Group* g, int64_t dim, std::vector<int64_t> sizes) {
    save(ctx, *g, dim, sizes);
    return reduce_scatter_uneven(*g, x, dim, sizes);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    return {all_gather_uneven(*group_of(ctx), grad[0].contiguous(), dim_of(ctx), sizes_of(ctx)), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

struct AllToAll : torch::autograd::Function<AllToAll> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Group* g, std::vector<int64_t> send,
                            std::vector<int64_t> recv) {
    ctx->saved_data["group"] = reinterpret_cast<int64_t>(g);
    ctx->saved_data["send"] = send;
    ctx->saved_data["recv"] = recv;
    return all_to_all(*g, x, send, recv);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    return {all_to_all(*group_of(ctx), grad[0].contiguous(), ctx->saved_data["recv"].toIntVector(),
                       ctx->saved_data["send"].toIntVector()),
            at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

std::vector<int64_t> chunk_sizes(int64_t n, int64_t parts) {
  const int64_t each = (n + parts - 1) / parts;
  std::vector<int64_t> sizes;
  for (int64_t r = 0; r < parts; ++r) sizes.push_back(std::clamp<int64_t>(n - r * each, 0, each));
  return sizes;
}

at::Tensor copy_to_group(const at::Tensor& x, Group& g) { return g.size() == 1 ? x : CopyTo::apply(x, &g); }
at::Tensor reduce_from_group(const at::Tensor& x, Group& g) { return g.size() == 1 ? x : ReduceFrom::apply(x, &g); }
at::Tensor gather_from_group(const at::Tensor& x, Group& g, int64_t dim, const std::vector<int64_t>& sizes) {
  return g.size() == 1 ? x : GatherFrom::apply(x, &g, dim, sizes);
}
at::Tensor scatter_to_group(const at::Tensor& x, Group& g, int64_t dim, const std::vector<int64_t>& sizes) {
  return g.size() == 1 ? x : ScatterTo::apply(x, &g, dim, sizes);
}
at::Tensor all_gather_autograd(const at::Tensor& x, Group& g, int64_t dim, const std::vector<int64_t>& sizes) {
  return g.size() == 1 ? x : AllGatherRS::apply(x, &g, dim, sizes);
}
at::Tensor reduce_scatter_autograd(const at::Tensor& x, Group& g, int64_t dim, const std::vector<int64_t>& sizes) {
  return g.size() == 1 ? x : ReduceScatterAG::apply(x, &g, dim, sizes);
}
at::Tensor all_to_all_autograd(const at::Tensor& x, Group& g, const std::vector<int64_t>& send_sizes,
                               const std::vector<int64_t>& recv_sizes) {
  return g.size() == 1 ? x : AllToAll::apply(x, &g, send_sizes, recv_sizes);
}

}  // namespace meshtrain::dist

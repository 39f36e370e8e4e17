// Collectives and their autograd pairs on 2 to 4 ranks (threads over Gloo on loopback), against
// what one process computes from all ranks' inputs; bytes counted per the ring formulas.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "dist/collectives.h"
#include "dist/comm_autograd.h"
#include "support/run_ranks.h"

using namespace meshtrain;
using meshtrain::testing::run_ranks;
using meshtrain::testing::sizes;

namespace {

// Rank r's input: a deterministic function of r.
at::Tensor input_of(int r, std::vector<int64_t> shape) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(100 + r);
  return at::randn(shape, gen);
}

}  // namespace

TEST(Collectives, AllReduceGatherScatterAndAllToAllMatchTheSerialResult) {
  for (int n : {2, 3, 4}) {
    run_ranks(sizes(1, n), [n](std::shared_ptr<dist::DeviceMesh> mesh) {
      auto& g = mesh->group(MeshDim::DpShard);
      const int r = g.rank();
      // all-reduce
      auto x = input_of(r, {5, 3});
      at::Tensor sum = at::zeros({5, 3});
      for (int k = 0; k < n; ++k) sum += input_of(k, {5, 3});
      auto y = x.clone();
      dist::all_reduce_(g, y);
      EXPECT_TRUE(at::allclose(y, sum, 1e-5, 1e-6));
      EXPECT_EQ(g.bytes_sent(), 2u * (n - 1) * 60 / n);
      // uneven all-gather on dim 1 (torch.chunk of 7 columns), including an empty shard at n=4
      auto full = input_of(0, {2, 7});
      auto sizes = dist::chunk_sizes(7, n);
      int64_t off = 0;
      for (int k = 0; k < r; ++k) off += sizes[k];
      auto mine = full.narrow(1, off, sizes[r]).contiguous();
      EXPECT_TRUE(at::equal(dist::all_gather_uneven(g, mine, 1, sizes), full));
      // uneven reduce-scatter on dim 0
      auto rs = dist::reduce_scatter_uneven(g, input_of(r, {7, 2}), 0, sizes);
      at::Tensor total = at::zeros({7, 2});
      for (int k = 0; k < n; ++k) total += input_of(k, {7, 2});
      EXPECT_TRUE(at::allclose(rs, total.narrow(0, off, sizes[r]), 1e-5, 1e-6));
      // equal-size all-gather and reduce-scatter
      auto parts = dist::all_gather(g, input_of(r, {2, 3}), 0);
      for (int k = 0; k < n; ++k) EXPECT_TRUE(at::equal(parts.narrow(0, 2 * k, 2), input_of(k, {2, 3})));
      at::Tensor whole = at::zeros({2 * n, 3});
      for (int k = 0; k < n; ++k) whole += input_of(k, {2 * n, 3});
      EXPECT_TRUE(at::allclose(dist::reduce_scatter(g, input_of(r, {2 * n, 3}), 0), whole.narrow(0, 2 * r, 2), 1e-5, 1e-6));
      // all-to-all with uneven splits: rank r sends (k + r) % 3 rows to rank k
      std::vector<int64_t> send(n), recv(n);
      for (int k = 0; k < n; ++k) {
        send[k] = (k + r) % 3;
        recv[k] = (r + k) % 3;
      }
      int64_t rows = 0;
      for (auto s : send) rows += s;
      auto a = at::arange(rows, at::kFloat).unsqueeze(1) + 100 * r;
      auto b = dist::all_to_all(g, a, send, recv);
      int64_t at_row = 0;
      for (int k = 0; k < n; ++k) {
        // rank k's block for me starts after its blocks for ranks < r
        int64_t start = 0;
        for (int j = 0; j < r; ++j) start += (j + k) % 3;
        for (int64_t i = 0; i < recv[k]; ++i) EXPECT_EQ(b[at_row + i][0].item<float>(), 100 * k + start + i);
        at_row += recv[k];
      }
      // broadcast and send/recv
      auto c = at::full({3}, float(r));
      dist::broadcast_(g, c, n - 1);
      EXPECT_EQ(c[0].item<float>(), n - 1);
      if (r == 0) dist::send(g, at::full({2}, 42.0f), n - 1);
      if (r == n - 1) {
        auto z = at::zeros({2});
        dist::recv(g, z, 0);
        EXPECT_EQ(z[1].item<float>(), 42.0f);
      }
    });
  }
}

TEST(CommAutograd, ParallelEqualsSerialForwardAndBackward) {
  const int n = 3;
  run_ranks(sizes(1, n), [](std::shared_ptr<dist::DeviceMesh> mesh) {
    auto& g = mesh->group(MeshDim::DpShard);
    const int r = g.rank();
    auto sizes = dist::chunk_sizes(8, n);  // 3, 3, 2
    int64_t off = 0;
    for (int k = 0; k < r; ++k) off += sizes[k];
    auto w = input_of(7, {8, 4});  // the same on every rank
    // gather_from_group: y = all_gather(x_r); loss = sum(y * w). dL/dx_r = w's rows of rank r.
    auto x = input_of(r, {sizes[r], 4}).requires_grad_();
    auto y = dist::gather_from_group(x, g, 0, sizes);
    (y * w).sum().backward();
    EXPECT_TRUE(at::allclose(x.grad(), w.narrow(0, off, sizes[r])));
    // all_gather_autograd (sequence-parallel pair): every rank's loss sees the full y, so the
    // gradient of x_r is the sum over ranks of their w rows: reduce-scatter.
    auto x2 = input_of(r, {sizes[r], 4}).requires_grad_();
    auto wr = input_of(20 + r, {8, 4});
    (dist::all_gather_autograd(x2, g, 0, sizes) * wr).sum().backward();
    at::Tensor want = at::zeros({8, 4});
    for (int k = 0; k < n; ++k) want += input_of(20 + k, {8, 4});
    EXPECT_TRUE(at::allclose(x2.grad(), want.narrow(0, off, sizes[r]), 1e-5, 1e-6));
    // copy_to_group / reduce_from_group: f's backward sums the replicas' gradients.
    auto x3 = at::ones({2}).requires_grad_();
    (dist::copy_to_group(x3, g) * float(r + 1)).sum().backward();
    EXPECT_TRUE(at::allclose(x3.grad(), at::full({2}, 6.0f)));
    auto x4 = input_of(r, {2}).requires_grad_();
    auto s = dist::reduce_from_group(x4, g);
    s.sum().backward();
    EXPECT_TRUE(at::allclose(x4.grad(), at::ones({2})));
    // all_to_all_autograd: backward sends gradients home.
    std::vector<int64_t> send(n, 1), recv(n, 1);
    auto x5 = (at::arange(n, at::kFloat) + 10 * r).requires_grad_();
    auto y5 = dist::all_to_all_autograd(x5, g, send, recv);
    (y5 * (at::arange(n, at::kFloat) + 1)).sum().backward();  // weight k+1 on the row from rank k
    EXPECT_TRUE(at::allclose(x5.grad(), at::full({n}, float(r + 1))));
  });
}

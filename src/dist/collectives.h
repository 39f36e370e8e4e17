// Collectives on a Group, synchronous unless named _async, each a no-op on a group of size 1.
// A tensor away from the group's device (dist/group.h) is copied there and the result back.
// Every failure or time-out becomes an Error naming this rank, the operation and the group.
// Bytes sent are counted as the ring algorithm sends them: all-reduce 2(n-1)/n·M, all-gather
// and reduce-scatter (n-1)/n·M of the full tensor, all-to-all what leaves this rank.
#pragma once
#include <torch/csrc/distributed/c10d/Work.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>

#include <vector>

#include "dist/group.h"

namespace meshtrain::dist {

void all_reduce_(Group& g, at::Tensor& t, c10d::ReduceOp op = c10d::ReduceOp::SUM);
// Starts an in-place all-reduce; wait with wait_work(). Null on a group of size 1.
c10::intrusive_ptr<c10d::Work> all_reduce_async(Group& g, at::Tensor& t);
void wait_work(Group& g, const c10::intrusive_ptr<c10d::Work>& work, const char* op);

// Concatenation of every rank's t along dim (all ranks pass the same shape).
at::Tensor all_gather(Group& g, const at::Tensor& t, int64_t dim);
// Chunks of different sizes along dim: sizes[r] is rank r's extent (torch.chunk shards).
at::Tensor all_gather_uneven(Group& g, const at::Tensor& t, int64_t dim, const std::vector<int64_t>& sizes);
// The same for 1-D tensors, started now and finished later (to overlap it with computation).
struct PendingGather {
  c10::intrusive_ptr<c10d::Work> work;
  at::Tensor padded;  // [most * n], on the group's device
  std::vector<int64_t> sizes;
  c10::Device device = c10::kCPU;  // where the result goes
};
PendingGather all_gather_1d_async(Group& g, const at::Tensor& t, const std::vector<int64_t>& sizes);
at::Tensor finish_gather(Group& g, PendingGather& pending);
// Sum over ranks of t, then this rank's chunk along dim (t.size(dim) divisible by the group size).
at::Tensor reduce_scatter(Group& g, const at::Tensor& t, int64_t dim);
// Sum over ranks, then rows [offsets[r], offsets[r] + sizes[r]) along dim for rank r.
at::Tensor reduce_scatter_uneven(Group& g, const at::Tensor& t, int64_t dim, const std::vector<int64_t>& sizes);
// Rows of t along dim 0 go to rank r in blocks of send_sizes[r]; block r of the result came
// from rank r, recv_sizes[r] rows.
at::Tensor all_to_all(Group& g, const at::Tensor& t, const std::vector<int64_t>& send_sizes,
                      const std::vector<int64_t>& recv_sizes);
void broadcast_(Group& g, at::Tensor& t, int root);
void send(Group& g, const at::Tensor& t, int dst);
void recv(Group& g, at::Tensor& t, int src);
// Point-to-point started now and finished with wait_work(), to overlap it with computation. t
// must be contiguous; the returned work keeps it alive. recv_async's tensor must be on the
// group's device. Messages between two ranks on one tag
// arrive in the order they were sent.
c10::intrusive_ptr<c10d::Work> send_async(Group& g, const at::Tensor& t, int dst, int tag = 0);
c10::intrusive_ptr<c10d::Work> recv_async(Group& g, at::Tensor& t, int src, int tag = 0);
// A send to dst and a receive from src started together, as a ring step does; finish both works
// with wait_work(). NCCL matches point-to-point by order, not by tag, so there the two start as
// one group: two ranks exchanging with each other would otherwise each wait for the other.
struct Exchange {
  c10::intrusive_ptr<c10d::Work> send, recv;
};
Exchange exchange_async(Group& g, const at::Tensor& out, int dst, at::Tensor& in, int src, int tag = 0);
void barrier(Group& g);

}  // namespace meshtrain::dist

// Runs an attention core on this rank's shard of a Reference (sequence on dim 2, sharded as the
// mesh shards it: load-balanced over cp, contiguous over sp) and compares out, lse and the
// gradients, gathered back to the full sequence.
#pragma once
#include "parallel/ulysses.h"
#include "support/attention_reference.h"

namespace meshtrain::testing {

inline void check_core(nn::AttentionCore& core, const Reference& ref, const dist::DeviceMesh& mesh,
                       const at::Tensor& document_ids = {}) {
  auto shard = [&](const at::Tensor& t) { return parallel::shard_sequence(t, mesh, 2); };
  auto q = shard(ref.q).requires_grad_(), k = shard(ref.k).requires_grad_(), v = shard(ref.v).requires_grad_();
  auto res = core.forward(q, k, v, ref.scale, document_ids);
  expect_close(res.lse, shard(ref.lse), "lse");
  expect_close(parallel::gather_sequence(res.out.detach(), mesh, 2), ref.out, "out");
  (res.out * shard(ref.w)).sum().backward();
  expect_close(parallel::gather_sequence(q.grad(), mesh, 2), ref.dq, "dq");
  expect_close(parallel::gather_sequence(k.grad(), mesh, 2), ref.dk, "dk");
  expect_close(parallel::gather_sequence(v.grad(), mesh, 2), ref.dv, "dv");
}

}  // namespace meshtrain::testing

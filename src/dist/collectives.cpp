#include "dist/collectives.h"

#include <chrono>
#include <numeric>

#include "dist/stall_report.h"
#include "util/check.h"

// The single-buffer collectives are called by their torch 2.11 names (_allgather_base,
// _reduce_scatter_base, alltoall_base); later versions keep these as aliases of all_gather_single,
// reduce_scatter_single and all_to_all_single.

namespace meshtrain::dist {

namespace {

uint64_t nbytes(const at::Tensor& t) { return static_cast<uint64_t>(t.numel()) * t.element_size(); }

// The tensor on the backend's device (dist/group.h): a CPU loss sum on NCCL or a CUDA tensor on
// Gloo travels there for the operation, and the result comes back.
at::Tensor on_backend(const Group& g, const at::Tensor& t) { return t.device() == g.device() ? t : t.to(g.device()); }

uint64_t ring_share(const Group& g, uint64_t bytes) {
  return bytes * static_cast<uint64_t>(g.size() - 1) / static_cast<uint64_t>(g.size());
}

// Every operation passes here when it is issued: its number in the group, and its flight record
// (the token that finishes it; 0 when the group records nothing).
uint64_t issue(Group& g, const char* op, const at::Tensor& t) {
  const uint64_t seq = g.note_issued();
  auto* flight = g.flight();
  return flight ? flight->begin(g.dim(), seq, op, t) : 0;
}

void attach(Group& g, uint64_t token, const c10::intrusive_ptr<c10d::Work>& work) {
  if (auto* flight = g.flight()) flight->attach_work(token, work.get());
}

void wait_or_fail(Group& g, const c10::intrusive_ptr<c10d::Work>& work, const char* op) {
  const auto start = std::chrono::steady_clock::now();
  try {
    work->wait(g.timeout());
  } catch (const std::exception& e) {
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::string ranks;
    for (int r : g.ranks()) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
    // A wait that ran its whole time-out is a stall: name the ranks that did not take part.
    if (waited >= 0.99 * std::chrono::duration<double>(g.timeout()).count()) {
      // The record goes out first: describe_stall waits for the others, and the launcher for it.
      if (auto* flight = g.flight()) flight->dump(str_cat("timeout in ", op, " on group ", g.name()));
      fail("rank ", g.global_rank(), ": ", op, " on group ", g.name(), " (ranks ", ranks, ") timed out after ",
           g.timeout().count() / 1000.0, " s; ", describe_stall(g));
    }
    fail("rank ", g.global_rank(), ": ", op, " on group ", g.name(), " (ranks ", ranks, ") failed after ", waited,
         " s: ", e.what());
  }
}

template <typename Start>
void run(Group& g, const char* op, const at::Tensor& t, Start&& start) {
  c10::intrusive_ptr<c10d::Work> work;
  const uint64_t token = issue(g, op, t);
  try {
    work = start();
  } catch (const std::exception& e) {
    fail("rank ", g.global_rank(), ": ", op, " on group ", g.name(), " failed: ", e.what());
  }
  if (!work) return;
  wait_or_fail(g, work, op);
  if (auto* flight = g.flight()) flight->finish(token);
}

}  // namespace

void wait_work(Group& g, const c10::intrusive_ptr<c10d::Work>& work, const char* op) {
  if (!work) return;
  wait_or_fail(g, work, op);
  if (auto* flight = g.flight()) flight->finish_work(g.dim(), work.get());
}

void all_reduce_(Group& g, at::Tensor& t, c10d::ReduceOp op) {
  if (g.size() == 1 || g.take_all_reduce_skip()) return;
  MT_CHECK(t.is_contiguous(), "all_reduce_ needs a contiguous tensor");
  g.count_sent(2 * ring_share(g, nbytes(t)));
  std::vector<at::Tensor> ts{on_backend(g, t)};
  c10d::AllreduceOptions opts;
  opts.reduceOp = op;
  run(g, "all_reduce", t, [&] { return g.backend().allreduce(ts, opts); });
  if (!ts[0].is_same(t)) t.copy_(ts[0]);
}

c10::intrusive_ptr<c10d::Work> all_reduce_async(Group& g, at::Tensor& t) {
  if (g.size() > 1 && t.device() != g.device()) {  // the copy back needs the result: no overlap
    all_reduce_(g, t);
    return {};
  }
  if (g.size() == 1 || g.take_all_reduce_skip()) return {};
  g.count_sent(2 * ring_share(g, nbytes(t)));
  const uint64_t token = issue(g, "all_reduce", t);
  std::vector<at::Tensor> ts{t};
  try {
    auto work = g.backend().allreduce(ts);
    attach(g, token, work);
    return work;
  } catch (const std::exception& e) {
    fail("rank ", g.global_rank(), ": all_reduce on group ", g.name(), " failed: ", e.what());
  }
}

at::Tensor all_gather_uneven(Group& g, const at::Tensor& t, int64_t dim, const std::vector<int64_t>& sizes) {
  MT_CHECK(static_cast<int>(sizes.size()) == g.size(), "all_gather: ", sizes.size(), " sizes for a group of ", g.size());
  MT_CHECK(t.size(dim) == sizes[g.rank()], "all_gather: this rank holds ", t.size(dim), " rows, sizes say ", sizes[g.rank()]);
  if (g.size() == 1) return t;
  // Gloo gathers equal blocks: pad every shard to the largest along dim 0 of a transposed view.
  const int64_t most = *std::max_element(sizes.begin(), sizes.end());
  auto moved = t.movedim(dim, 0).contiguous();
  auto shape = moved.sizes().vec();
  shape[0] = most;
  const auto there = t.options().device(g.device());
  auto padded = at::zeros(shape, there);
  padded.narrow(0, 0, moved.size(0)).copy_(moved);
  shape[0] = most * g.size();
  auto out = at::empty(shape, there);
  g.count_sent(ring_share(g, nbytes(out)));
  run(g, "all_gather", padded, [&] { return g.backend()._allgather_base(out, padded); });
  std::vector<at::Tensor> parts;
  for (int r = 0; r < g.size(); ++r) parts.push_back(out.narrow(0, r * most, sizes[r]));
  return at::cat(parts, 0).movedim(0, dim).contiguous().to(t.device());
}

PendingGather all_gather_1d_async(Group& g, const at::Tensor& t, const std::vector<int64_t>& sizes) {
  MT_CHECK(t.dim() == 1 && static_cast<int>(sizes.size()) == g.size() && t.size(0) == sizes[g.rank()],
           "all_gather_1d_async: a 1-D tensor of this rank's size (", sizes[g.rank()], ") expected, got ", t.sizes());
  PendingGather p{{}, t, sizes, t.device()};
  if (g.size() == 1) return p;
  const int64_t most = *std::max_element(sizes.begin(), sizes.end());
  const auto there = t.options().device(g.device());
  auto in = at::zeros({most}, there);
  in.narrow(0, 0, t.size(0)).copy_(t);
  p.padded = at::empty({most * g.size()}, there);
  g.count_sent(ring_share(g, nbytes(p.padded)));
  const uint64_t token = issue(g, "all_gather", in);
  try {
    p.work = g.backend()._allgather_base(p.padded, in);
    attach(g, token, p.work);
  } catch (const std::exception& e) {
    fail("rank ", g.global_rank(), ": all_gather on group ", g.name(), " failed: ", e.what());
  }
  return p;
}

at::Tensor finish_gather(Group& g, PendingGather& p) {
  if (g.size() == 1) return p.padded;
  wait_work(g, p.work, "all_gather");
  const int64_t most = p.padded.size(0) / g.size();
  std::vector<at::Tensor> parts;
  for (int r = 0; r < g.size(); ++r) parts.push_back(p.padded.narrow(0, r * most, p.sizes[r]));
  return at::cat(parts).to(p.device);
}

at::Tensor all_gather(Group& g, const at::Tensor& t, int64_t dim) {
  return all_gather_uneven(g, t, dim, std::vector<int64_t>(g.size(), t.size(dim)));
}

at::Tensor reduce_scatter_uneven(Group& g, const at::Tensor& t, int64_t dim, const std::vector<int64_t>& sizes) {
  MT_CHECK(static_cast<int>(sizes.size()) == g.size(), "reduce_scatter: ", sizes.size(), " sizes for a group of ", g.size());
  MT_CHECK(std::accumulate(sizes.begin(), sizes.end(), int64_t{0}) == t.size(dim), "reduce_scatter: sizes sum to ",
           std::accumulate(sizes.begin(), sizes.end(), int64_t{0}), " but the tensor has ", t.size(dim), " along dim ", dim);
  if (g.size() == 1) return t;
  const int64_t most = *std::max_element(sizes.begin(), sizes.end());
  auto moved = t.movedim(dim, 0);
  auto shape = moved.sizes().vec();
  shape[0] = most * g.size();
  const auto there = t.options().device(g.device());
  auto padded = at::zeros(shape, there);
  int64_t offset = 0;
  for (int r = 0; r < g.size(); ++r) {
    padded.narrow(0, r * most, sizes[r]).copy_(moved.narrow(0, offset, sizes[r]));
    offset += sizes[r];
  }
  shape[0] = most;
  auto out = at::empty(shape, there);
  g.count_sent(ring_share(g, nbytes(padded)));
  run(g, "reduce_scatter", padded, [&] { return g.backend()._reduce_scatter_base(out, padded); });
  return out.narrow(0, 0, sizes[g.rank()]).movedim(0, dim).contiguous().to(t.device());
}

at::Tensor reduce_scatter(Group& g, const at::Tensor& t, int64_t dim) {
  MT_CHECK(t.size(dim) % g.size() == 0, "reduce_scatter: size ", t.size(dim), " along dim ", dim,
           " is not divisible by the group size ", g.size());
  return reduce_scatter_uneven(g, t, dim, std::vector<int64_t>(g.size(), t.size(dim) / g.size()));
}

at::Tensor all_to_all(Group& g, const at::Tensor& t, const std::vector<int64_t>& send_sizes,
                      const std::vector<int64_t>& recv_sizes) {
  MT_CHECK(static_cast<int>(send_sizes.size()) == g.size() && static_cast<int>(recv_sizes.size()) == g.size(),
           "all_to_all: split lists must have one entry per rank (", g.size(), ")");
  MT_CHECK(std::accumulate(send_sizes.begin(), send_sizes.end(), int64_t{0}) == t.size(0), "all_to_all: send sizes sum to ",
           std::accumulate(send_sizes.begin(), send_sizes.end(), int64_t{0}), " but the tensor has ", t.size(0), " rows");
  if (g.size() == 1) return t;
  auto in = on_backend(g, t.contiguous());
  auto shape = in.sizes().vec();
  shape[0] = std::accumulate(recv_sizes.begin(), recv_sizes.end(), int64_t{0});
  auto out = at::empty(shape, in.options());
  const uint64_t row = in.size(0) ? nbytes(in) / static_cast<uint64_t>(in.size(0)) : 0;
  g.count_sent(row * static_cast<uint64_t>(t.size(0) - send_sizes[g.rank()]));
  std::vector<int64_t> send(send_sizes), recv(recv_sizes);
  run(g, "all_to_all", in, [&] { return g.backend().alltoall_base(out, in, recv, send); });
  return out.to(t.device());
}

void broadcast_(Group& g, at::Tensor& t, int root) {
  if (g.size() == 1) return;
  if (g.rank() == root) g.count_sent(nbytes(t));
  std::vector<at::Tensor> ts{on_backend(g, t)};
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  run(g, "broadcast", t, [&] { return g.backend().broadcast(ts, opts); });
  if (!ts[0].is_same(t)) t.copy_(ts[0]);
}

void send(Group& g, const at::Tensor& t, int dst) {
  g.count_sent(nbytes(t));
  std::vector<at::Tensor> ts{on_backend(g, t.contiguous())};
  run(g, "send", ts[0], [&] { return g.backend().send(ts, dst, 0); });
}

void recv(Group& g, at::Tensor& t, int src) {
  std::vector<at::Tensor> ts{on_backend(g, t)};
  run(g, "recv", t, [&] { return g.backend().recv(ts, src, 0); });
  if (!ts[0].is_same(t)) t.copy_(ts[0]);
}

namespace {

// A point-to-point operation started: its flight token and its work (null while NCCL coalesces).
struct Started {
  uint64_t token;
  c10::intrusive_ptr<c10d::Work> work;
};

Started start_send(Group& g, const at::Tensor& t, int dst, int tag) {
  MT_CHECK(t.is_contiguous(), "send_async needs a contiguous tensor");
  g.count_sent(nbytes(t));
  const uint64_t token = issue(g, "send", t);
  std::vector<at::Tensor> ts{on_backend(g, t)};  // the work keeps a copy alive
  try {
    return {token, g.backend().send(ts, dst, tag)};
  } catch (const std::exception& e) {
    fail("rank ", g.global_rank(), ": send to ", dst, " on group ", g.name(), " failed: ", e.what());
  }
}

Started start_recv(Group& g, at::Tensor& t, int src, int tag) {
  MT_CHECK(t.is_contiguous(), "recv_async needs a contiguous tensor");
  MT_CHECK(t.device() == g.device(), "recv_async on group ", g.name(), " needs a tensor on ", g.device(), ", got ",
           t.device());
  const uint64_t token = issue(g, "recv", t);
  std::vector<at::Tensor> ts{t};
  try {
    return {token, g.backend().recv(ts, src, tag)};
  } catch (const std::exception& e) {
    fail("rank ", g.global_rank(), ": recv from ", src, " on group ", g.name(), " failed: ", e.what());
  }
}

}  // namespace

c10::intrusive_ptr<c10d::Work> send_async(Group& g, const at::Tensor& t, int dst, int tag) {
  auto started = start_send(g, t, dst, tag);
  attach(g, started.token, started.work);
  return started.work;
}

c10::intrusive_ptr<c10d::Work> recv_async(Group& g, at::Tensor& t, int src, int tag) {
  auto started = start_recv(g, t, src, tag);
  attach(g, started.token, started.work);
  return started.work;
}

Exchange exchange_async(Group& g, const at::Tensor& out, int dst, at::Tensor& in, int src, int tag) {
  if (!g.device().is_cuda()) return {send_async(g, out, dst, tag), recv_async(g, in, src, tag)};
  g.backend().startCoalescing();
  const auto sent = start_send(g, out, dst, tag);
  const auto received = start_recv(g, in, src, tag);
  c10::intrusive_ptr<c10d::Work> both;
  try {
    both = g.backend().endCoalescing();
  } catch (const std::exception& e) {
    fail("rank ", g.global_rank(), ": send to ", dst, " with recv from ", src, " on group ", g.name(),
         " failed: ", e.what());
  }
  attach(g, sent.token, both);
  attach(g, received.token, both);
  return {both, both};  // each wait_work finishes one of the two records
}

void barrier(Group& g) {
  if (g.size() == 1) return;
  run(g, "barrier", at::Tensor(), [&] { return g.backend().barrier(); });
}

}  // namespace meshtrain::dist

#include "nn/moe.h"

#include <atomic>
#include <numeric>

#include "util/check.h"

namespace meshtrain::nn {

namespace {

// Set when a GPU's at::_grouped_mm refused (its kernels need bf16 on sm90, or a newer torch):
// the per-expert loop from then on.
std::atomic<bool> cuda_grouped_mm_refused{false};

// at::_grouped_mm needs every stride of its operands to be a multiple of 16 bytes.
bool grouped_mm_applies(const at::Tensor& x, const at::Tensor& w) {
  if (!x.is_cpu() && (!x.is_cuda() || cuda_grouped_mm_refused)) return false;
  const int64_t align = 16 / static_cast<int64_t>(x.element_size());
  return x.is_contiguous() && w.is_contiguous() && x.size(1) % align == 0 && w.size(1) % align == 0;
}

}  // namespace

at::Tensor grouped_linear(const at::Tensor& x, const at::Tensor& w, const std::vector<int64_t>& counts,
                          GemmPath path) {
  MT_CHECK(x.dim() == 2 && w.dim() == 3 && x.size(1) == w.size(2) && w.size(0) == static_cast<int64_t>(counts.size()),
           "grouped_linear expects x [M, in], w [G, out, in] and G counts; got x ", x.sizes(), ", w ", w.sizes(),
           ", ", counts.size(), " counts");
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  MT_CHECK(total == x.size(0), "grouped_linear: the counts sum to ", total, " but x has ", x.size(0), " rows");
  if (x.size(0) == 0) return at::mm(x, w.select(0, 0).t());  // [0, out], still in the graph of w
  const bool chosen = path == GemmPath::Auto;
  if (chosen) path = grouped_mm_applies(x, w) ? GemmPath::Grouped : GemmPath::PerExpert;
  if (path == GemmPath::Grouped) {
    std::vector<int32_t> ends(counts.size());
    int64_t end = 0;
    for (size_t g = 0; g < counts.size(); ++g) ends[g] = static_cast<int32_t>(end += counts[g]);
    auto offs = at::tensor(ends, at::TensorOptions(at::kInt)).to(x.device());
    try {  // its checks run before any kernel starts
      return at::_grouped_mm(x, w.transpose(1, 2), offs);
    } catch (const c10::Error&) {
      if (!(chosen && x.is_cuda())) throw;  // asked for, or on CPU: the error stands
      cuda_grouped_mm_refused = true;
    }
  }
  std::vector<at::Tensor> parts;
  int64_t start = 0;
  for (size_t g = 0; g < counts.size(); ++g) {
    if (counts[g] == 0) continue;
    parts.push_back(at::mm(x.narrow(0, start, counts[g]), w.select(0, static_cast<int64_t>(g)).t()));
    start += counts[g];
  }
  return parts.size() == 1 ? parts[0] : at::cat(parts);
}

Experts::Experts(int64_t num_experts, int64_t hidden_size, int64_t intermediate_size) {
  gate_up_proj = register_parameter("gate_up_proj", at::empty({num_experts, 2 * intermediate_size, hidden_size}));
  down_proj = register_parameter("down_proj", at::empty({num_experts, hidden_size, intermediate_size}));
}

at::Tensor Experts::forward(const at::Tensor& rows, const std::vector<int64_t>& rows_per_expert) {
  auto gate_up = grouped_linear(rows, gate_up_proj, rows_per_expert, gemm_path).chunk(2, -1);
  return grouped_linear(at::silu(gate_up[0]) * gate_up[1], down_proj, rows_per_expert, gemm_path);
}

SparseMoe::SparseMoe(const MoeShape& s) : shape_(s) {
  MT_CHECK(s.num_experts > 0 && s.top_k > 0 && s.top_k <= s.num_experts, "MoE needs 0 < top_k <= num_experts, got top_k ",
           s.top_k, " of ", s.num_experts, " experts");
  gate = register_module("gate", std::make_shared<Linear>(s.hidden_size, s.num_experts, false));
  experts = register_module("experts", std::make_shared<Experts>(s.num_experts, s.hidden_size, s.intermediate_size));
}

MoeOutput SparseMoe::forward(const at::Tensor& input) {
  auto x = block_->enter(input);
  const auto shape = x.sizes().vec();
  auto flat = x.reshape({-1, shape_.hidden_size});
  auto logits = gate->forward(flat);  // [N, E]
  auto probs = at::softmax(logits.to(at::kFloat), -1);
  auto [top_weights, top_experts] = probs.topk(shape_.top_k, -1);
  if (shape_.norm_topk_prob) top_weights = top_weights / top_weights.sum(-1, /*keepdim=*/true);

  RouterRecord router{logits, {}, 0};
  {
    at::NoGradGuard no_grad;
    router.tokens_per_expert = at::bincount(top_experts.reshape({-1}), {}, shape_.num_experts);
  }
  auto dispatched = dispatcher_->dispatch(flat, top_experts, top_weights, {shape_.num_experts, shape_.capacity_factor});
  router.dropped = dispatched.dropped;
  auto out = experts->forward(dispatched.rows, dispatched.rows_per_expert);
  return {block_->leave(dispatcher_->combine(out, dispatched).view(shape)), std::move(router)};
}

RouterLoad router_load(const std::vector<at::Tensor>& router_logits, int64_t num_experts, int64_t top_k) {
  MT_CHECK(!router_logits.empty(), "the load-balancing loss needs the router logits of at least one layer");
  auto logits = at::cat(router_logits, 0);  // [R, E]
  auto routing = at::softmax(logits, -1);
  RouterLoad load;
  load.rows = logits.size(0);
  {
    at::NoGradGuard no_grad;
    auto selected = std::get<1>(routing.topk(top_k, -1));
    load.assignments = at::bincount(selected.reshape({-1}), {}, num_experts).to(at::kFloat);
  }
  load.prob_sum = routing.to(at::kFloat).sum(0);
  return load;
}

at::Tensor balance_loss(const at::Tensor& assignments, const at::Tensor& prob_sum, double rows) {
  const double num_experts = static_cast<double>(assignments.size(0));
  return ((assignments / rows) * (prob_sum / rows)).sum() * num_experts;
}

at::Tensor load_balancing_loss(const std::vector<at::Tensor>& router_logits, int64_t num_experts, int64_t top_k) {
  auto load = router_load(router_logits, num_experts, top_k);
  return balance_loss(load.assignments, load.prob_sum, static_cast<double>(load.rows));
}

}  // namespace meshtrain::nn

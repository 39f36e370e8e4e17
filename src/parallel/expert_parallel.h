// Expert parallelism for MoE layers: each rank of the ep group holds num_experts / ep experts
// (gate_up_proj and down_proj sharded on dim 0) and a TokenDispatcher moves the tokens.
//
// Token dispatch (--ep_mode alltoall, as Megatron and torchtitan): the ep group is a block of
// the dp_shard × cp ranks, which hold different tokens. Each rank routes its own tokens, sends
// each row to the rank of its expert with an all-to-all of variable splits, and gets the outputs
// back the same way; the experts' gradients are summed over the ranks holding the same experts
// ("ep_replicate"), not over ep.
//
// Router masking (--ep_mode allreduce, upstream-compatible): the ep group is drawn from the tp
// group (all of it when ep == tp) and every rank sees all tokens. Assignments to other ranks'
// experts are masked with the sentinel num_local_experts and skipped; the local experts'
// weighted outputs are all-reduced. Unlike upstream's forward-only hook, the backward is exact:
// the gradients of the tokens and of the routing weights, each rank's partial sums, are
// all-reduced, so the router (replicated, fed the full gradient on every rank) and the attention
// below it see the serial gradients. With ep < tp the rest of the tp group ("etp") splits each
// expert inside, and those sums run over ep and etp: over the whole tp group.
//
// In both modes data parallelism leaves the experts alone: their gradients are summed over
// "ep_replicate", the ranks holding the same experts.
#pragma once
#include <string>

#include "dist/device_mesh.h"
#include "models/llama.h"

namespace meshtrain::parallel {

enum class EpMode { AllToAll, AllReduce };
// "alltoall" | "allreduce"; anything else is a UsageError listing them.
EpMode parse_ep_mode(const std::string& name);

// Shards the experts of every MoE layer over the mesh's "ep" group (their placement records say
// so) and installs the mode's dispatcher (inside tensor parallelism of the experts, when tp
// split them already). num_experts must divide by ep (upstream's message otherwise).
void apply_expert_parallel(models::LlamaForCausalLM& model, const dist::DeviceMesh& mesh, EpMode mode);

// moe_tp_experts: the experts' weights sharded over tp (gate_up_proj packed_colwise, down_proj
// rowwise), so every tp rank computes its slice of every expert for the same tokens. The tokens
// and routing weights enter through f and the partial outputs are summed over tp after
// `inner`'s combine.
std::shared_ptr<nn::TokenDispatcher> tensor_parallel_experts(std::shared_ptr<nn::TokenDispatcher> inner,
                                                             dist::Group& tp);

// Whether a parameter is an expert sharded over "ep": data parallelism leaves it alone, its
// gradients are summed over "ep_replicate".
bool is_dispatched_expert(const nn::ParamPlacement& place);

}  // namespace meshtrain::parallel

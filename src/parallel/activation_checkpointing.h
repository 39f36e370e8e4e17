// Activation checkpointing: the chosen decoder layers keep only their input in forward and run
// again in backward, re-issuing the same collectives in the same order on every rank. A
// LayerRunner, installed inside FSDP's gather.
#pragma once
#include <cstdint>

#include "models/llama.h"

namespace meshtrain::parallel {

// Checkpoints every `every`-th decoder layer (layers 0, every, 2·every, ...); every = 1 is full
// checkpointing.
void apply_activation_checkpointing(models::LlamaForCausalLM& model, int64_t every);

}  // namespace meshtrain::parallel

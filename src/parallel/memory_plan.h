// One rank's memory in a training step, predicted without running it: parameters, gradients and
// AdamW state from the laid-out model's own shards, activations from the shapes each layer saves
// for backward (docs/planning.md lists them), FSDP's gathered units and the loss's buffers.
#pragma once
#include <cstdint>

#include "parallel/parallelize.h"

namespace meshtrain::parallel {

struct StepShape {
  int64_t micro_batch = 1;  // rows per micro-batch on this rank (per_device_train_batch_size)
  int64_t seq_len = 1;
  int64_t accumulation = 1;  // micro-batches per step
};

// Bytes, fp32.
struct MemoryEstimate {
  int64_t parameters = 0;       // this rank's shards
  int64_t gradients = 0;        // of the same shapes, made in backward and dropped after the step
  int64_t optimizer_state = 0;  // AdamW's exp_avg and exp_avg_sq
  int64_t activations = 0;      // saved for backward by one micro-batch's forward; under pp, the
                                // most this rank's stages hold at once in the step's schedule
  int64_t loss_buffers = 0;     // logits and log-softmax of one micro-batch (the last stage's)
  int64_t gathered = 0;         // FSDP: the root unit and two layer units in full (current, prefetched)
  int64_t comm_buffers = 0;     // DDP's buckets, kept from one step to the next
  bool gradients_at_peak = false;  // with accumulation (under pp: a backward before the fullest
                                   // moment), earlier micro-batches' gradients are held
  // At the start of the last micro-batch's backward, where the activations are all held.
  int64_t peak() const;
};

MemoryEstimate estimate_memory(ParallelModel& model, const StepShape& shape, const ParallelOptions& options);

}  // namespace meshtrain::parallel

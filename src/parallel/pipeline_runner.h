// The pipeline executor: runs this stage's actions of a schedule (parallel/pipeline_schedule.h)
// on the step's micro-batches, with the activations and their gradients passed to the
// neighbouring stages by non-blocking point-to-point on the pp group, receives posted one action
// ahead. The loss is step_loss()'s: the last stage sums the cross entropy, every micro-batch's
// backward divides by the step's global target count; each stage adds its share of an MoE model's
// load-balancing loss (parallel/pipeline_routing.h).
#pragma once
#include <vector>

#include "parallel/step_loss.h"

namespace meshtrain::parallel {

class PipelineTimeline;

// step_loss() under pp_size > 1: the same record, summed over the stages. Collective over the mesh.
// A timeline, when given, adds where this stage's time went (parallel/pipeline_timeline.h).
StepLoss pipeline_step_loss(ParallelModel& model, const std::vector<MicroBatch>& micro_batches, Pass pass,
                            PipelineTimeline* timeline = nullptr);

}  // namespace meshtrain::parallel

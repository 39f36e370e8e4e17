#include "parallel/pipeline_timeline.h"

#include <algorithm>

namespace meshtrain::parallel {

PipelineTimeline::Scope::Scope(PipelineTimeline* timeline, Span span) : timeline_(timeline), span_(span) {
  if (timeline_) start_ = std::chrono::steady_clock::now();
}

PipelineTimeline::Scope::~Scope() {
  if (!timeline_) return;
  timeline_->seconds_[static_cast<size_t>(span_)] +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (span_ == Span::Forward) timeline_->peak_in_flight_ = std::max(timeline_->peak_in_flight_, ++timeline_->in_flight_);
  if (span_ == Span::Backward) --timeline_->in_flight_;
}

double PipelineTimeline::compute_seconds() const {
  return seconds(Span::Forward) + seconds(Span::Backward) - seconds(Span::Wait);
}

void PipelineTimeline::reset() { *this = PipelineTimeline{}; }

}  // namespace meshtrain::parallel

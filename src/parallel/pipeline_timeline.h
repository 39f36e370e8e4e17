// Where a pipeline stage's step goes: computing its forward and backward actions, or blocked in
// the receive of the activation or gradient an action needs; and how many micro-batches it holds
// between their forward and backward at most. Off unless the caller of the runner hands one in;
// off, each hook is one null-pointer check.
#pragma once
#include <array>
#include <chrono>
#include <cstdint>

namespace meshtrain::parallel {

class PipelineTimeline {
 public:
  enum class Span { Forward, Backward, Wait };  // a wait lies inside the action that waits

  // Times a span from construction to destruction on `timeline`, if not null.
  class Scope {
   public:
    Scope(PipelineTimeline* timeline, Span span);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    PipelineTimeline* timeline_;
    Span span_;
    std::chrono::steady_clock::time_point start_;
  };

  double seconds(Span span) const { return seconds_[static_cast<size_t>(span)]; }
  // Forward and backward time less the waits inside them.
  double compute_seconds() const;
  // Micro-batches forwarded and not yet backwarded (a training step), at most.
  int64_t peak_in_flight() const { return peak_in_flight_; }
  void reset();

 private:
  std::array<double, 3> seconds_{};
  int64_t in_flight_ = 0, peak_in_flight_ = 0;
};

}  // namespace meshtrain::parallel

// Preemption: SIGTERM (what SLURM and Kubernetes send before a kill) asks the run to stop at the
// end of the current step; the ranks agree on it there (any rank that got it stops them all), save
// a checkpoint and exit 0, so `--resume_from_checkpoint latest` loses nothing.
#pragma once
#include <signal.h>

#include "dist/group.h"

namespace meshtrain::train {

class PreemptionWatch {
 public:
  PreemptionWatch();   // installs the SIGTERM handler
  ~PreemptionWatch();  // restores the previous one
  PreemptionWatch(const PreemptionWatch&) = delete;
  PreemptionWatch& operator=(const PreemptionWatch&) = delete;

  // Whether any rank of `world` received SIGTERM (collective when the world has several ranks).
  bool requested(dist::Group& world) const;

 private:
  struct sigaction previous_ {};
};

}  // namespace meshtrain::train

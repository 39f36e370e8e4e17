// The output directory of a run, held for its length: created and proven writable by every rank,
// locked by rank 0 (flock on .meshtrain.lock, which names the holder's pid and host) so that a
// second run on it stops at once, and cleared of the temporary checkpoints a killed run left.
#pragma once
#include <filesystem>

namespace meshtrain::train {

class RunDirectory {
 public:
  // Rank 0 takes the lock and clears stale temporaries; every rank checks that it can write.
  RunDirectory(std::filesystem::path dir, int rank);
  ~RunDirectory();
  RunDirectory(const RunDirectory&) = delete;
  RunDirectory& operator=(const RunDirectory&) = delete;
  const std::filesystem::path& path() const { return dir_; }

 private:
  std::filesystem::path dir_;
  int lock_fd_ = -1;
};

}  // namespace meshtrain::train

// RankOutput: relays one child stream (a rank's stdout or stderr) to one of the launcher's file
// descriptors. Without a prefix the bytes pass through unchanged (rank 0: progress bars with \r
// still work); with one, the stream is cut into lines and each is written whole, prefixed.
#pragma once
#include <cstddef>
#include <string>

namespace meshtrain::tools {

// Writes all n bytes to fd, retrying on EINTR / short writes; gives up quietly if fd is gone.
void write_all(int fd, const char* data, size_t n);

class RankOutput {
 public:
  RankOutput(int dest_fd, std::string prefix) : dest_fd_(dest_fd), prefix_(std::move(prefix)) {}

  void feed(const char* data, size_t n);
  // Ends a pending partial line with '\n' (call once the stream is closed).
  void finish();

 private:
  void emit_line(const char* data, size_t n);  // prefix + data + '\n', as one write

  static constexpr size_t kMaxPending = 64 * 1024;  // a longer "line" is cut here
  int dest_fd_;
  std::string prefix_;
  std::string pending_;  // bytes after the last '\n' (prefixed streams only)
};

}  // namespace meshtrain::tools

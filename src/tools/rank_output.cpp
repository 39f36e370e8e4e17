// RankOutput: pass-through or line-prefixed relay of a child's stream (see rank_output.h).
#include "tools/rank_output.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace meshtrain::tools {

void write_all(int fd, const char* data, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return;  // EPIPE and the like: the reader is gone, keep the children running regardless
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
}

void RankOutput::feed(const char* data, size_t n) {
  if (prefix_.empty()) {
    write_all(dest_fd_, data, n);
    return;
  }
  while (n > 0) {
    const char* nl = static_cast<const char*>(std::memchr(data, '\n', n));
    if (!nl) {
      pending_.append(data, n);
      if (pending_.size() >= kMaxPending) {
        emit_line(pending_.data(), pending_.size());
        pending_.clear();
      }
      return;
    }
    const size_t len = static_cast<size_t>(nl - data);
    if (pending_.empty()) {
      emit_line(data, len);
    } else {
      pending_.append(data, len);
      emit_line(pending_.data(), pending_.size());
      pending_.clear();
    }
    data = nl + 1;
    n -= len + 1;
  }
}

void RankOutput::finish() {
  if (pending_.empty()) return;
  emit_line(pending_.data(), pending_.size());
  pending_.clear();
}

void RankOutput::emit_line(const char* data, size_t n) {
  std::string line;
  line.reserve(prefix_.size() + n + 1);
  line.append(prefix_).append(data, n).push_back('\n');
  write_all(dest_fd_, line.data(), line.size());
}

}  // namespace meshtrain::tools

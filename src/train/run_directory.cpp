#include "train/run_directory.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

#include "util/check.h"
#include "util/files.h"

namespace meshtrain::train {

namespace fs = std::filesystem;

namespace {

std::string host_name() {
  char buf[256] = {};
  return ::gethostname(buf, sizeof buf - 1) == 0 ? buf : "?";
}

// Creating, writing and removing a file: what every checkpoint and log write needs.
void check_writable(const fs::path& dir, int rank) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  MT_CHECK(fs::is_directory(dir), "--output_dir ", dir, " cannot be created: ", util::errno_message(ec.value()));
  const auto probe = dir / (".write-probe-" + host_name() + "-" + std::to_string(::getpid()) + "-" + std::to_string(rank));
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const int err = errno;
  MT_CHECK(fd >= 0, "--output_dir ", dir, " is not writable: ", util::errno_message(err));
  const bool wrote = ::write(fd, "ok\n", 3) == 3;
  const int write_err = errno;
  ::close(fd);
  ::unlink(probe.c_str());
  MT_CHECK(wrote, "--output_dir ", dir, " is not writable: ", util::errno_message(write_err));
}

}  // namespace

RunDirectory::RunDirectory(fs::path dir, int rank) : dir_(std::move(dir)) {
  check_writable(dir_, rank);
  if (rank != 0) return;
  const auto lock_path = dir_ / ".meshtrain.lock";
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  MT_CHECK(lock_fd_ >= 0, "cannot open ", lock_path, ": ", util::errno_message(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(lock_fd_);
    lock_fd_ = -1;
    std::string holder = util::read_file(lock_path);
    while (!holder.empty() && holder.back() == '\n') holder.pop_back();
    MT_CHECK(err != EWOULDBLOCK, "--output_dir ", dir_, " is in use by another run (",
             holder.empty() ? "holder unknown" : holder, "); give each run its own output directory");
    fail("cannot lock ", lock_path, ": ", util::errno_message(err));
  }
  const std::string me = "pid " + std::to_string(::getpid()) + " on host " + host_name() + "\n";
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, me.data(), me.size(), 0) != static_cast<ssize_t>(me.size()))
    fail("cannot write ", lock_path, ": ", util::errno_message(errno));
  // A run killed while saving leaves .checkpoint-N.tmp behind, or .checkpoint-N.old: the previous
  // checkpoint-N, moved aside just before the new one took its name.
  for (auto& entry : fs::directory_iterator(dir_)) {
    const auto name = entry.path().filename().string();
    if (!name.starts_with(".checkpoint-")) continue;
    const auto final_dir = dir_ / name.substr(1, name.rfind('.') - 1);
    if (name.ends_with(".old") && !fs::exists(final_dir)) {
      std::fprintf(stderr, "restoring %s, moved aside by an interrupted save\n", final_dir.c_str());
      fs::rename(entry.path(), final_dir);
    } else if (name.ends_with(".tmp") || name.ends_with(".old")) {
      std::fprintf(stderr, "removing %s, left by an interrupted save\n", entry.path().c_str());
      fs::remove_all(entry.path());
    }
  }
}

RunDirectory::~RunDirectory() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // closing releases the flock
}

}  // namespace meshtrain::train

#include "util/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <utility>

#include "util/check.h"

namespace meshtrain::util {

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  MT_CHECK(in, "cannot open ", path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void sync_path(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  MT_CHECK(fd >= 0, "cannot open ", path, " to sync it");
  ::fsync(fd);
  ::close(fd);
}

void write_file_atomic(const std::filesystem::path& path, std::string_view content) {
  auto tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    MT_CHECK(out, "cannot create ", tmp, ": ", errno_message(errno));
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.flush();
    MT_CHECK(out, "cannot write ", tmp, ": ", errno_message(errno));
  }
  sync_path(tmp);
  std::filesystem::rename(tmp, path);
}

std::string errno_message(int err) {
  const char* name = ::strerrorname_np(err);
  return str_cat(name ? name : "errno " + std::to_string(err), ": ", std::strerror(err));
}

TempDir::TempDir(const std::string& prefix) {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base && *base ? base : "/tmp") + "/" + prefix + "-XXXXXX";
  MT_CHECK(::mkdtemp(pattern.data()), "cannot create a temporary directory ", pattern, ": ", errno_message(errno));
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

AppendFile::AppendFile(const std::filesystem::path& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  MT_CHECK(fd_ >= 0, "cannot open ", path, " for appending: ", errno_message(errno));
}

AppendFile::AppendFile(AppendFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)) {}

AppendFile& AppendFile::operator=(AppendFile&& other) noexcept {
  if (fd_ >= 0) ::close(fd_);
  path_ = std::move(other.path_);
  fd_ = std::exchange(other.fd_, -1);
  return *this;
}

AppendFile::~AppendFile() {
  if (fd_ >= 0) ::close(fd_);
}

void AppendFile::append(std::string_view text) {
  MT_CHECK(fd_ >= 0, "append to a file that is not open");
  while (!text.empty()) {
    const ssize_t n = ::write(fd_, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    MT_CHECK(n > 0, "cannot write ", path_, ": ", errno_message(n < 0 ? errno : EIO));
    text.remove_prefix(static_cast<size_t>(n));
  }
}

}  // namespace meshtrain::util

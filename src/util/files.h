// Whole-file reads and crash-safe writes (a file is written under a temporary name, flushed and
// renamed, so a reader sees the old content or the new, never a torn one), an append-only log
// file, and write errors that name errno ("ENOSPC: No space left on device").
#pragma once
#include <filesystem>
#include <string>
#include <string_view>

namespace meshtrain::util {

std::string read_file(const std::filesystem::path& path);
void write_file_atomic(const std::filesystem::path& path, std::string_view content);
// fsync a file or a directory so a rename into it survives a crash.
void sync_path(const std::filesystem::path& path);

// "ENOSPC: No space left on device" for errno ENOSPC.
std::string errno_message(int err);

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it at destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A file opened for appending whole records (metrics.jsonl lines, TensorBoard events); every
// failed write throws naming the file and errno.
class AppendFile {
 public:
  AppendFile() = default;
  explicit AppendFile(const std::filesystem::path& path);
  AppendFile(AppendFile&& other) noexcept;
  AppendFile& operator=(AppendFile&& other) noexcept;
  ~AppendFile();
  void append(std::string_view text);

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

}  // namespace meshtrain::util

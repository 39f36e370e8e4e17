// Whole-file reads and crash-safe writes: a file is written under a temporary name, flushed
// and renamed, so a reader sees the old content or the new, never a torn one.
#pragma once
#include <filesystem>
#include <string>
#include <string_view>

namespace meshtrain::util {

std::string read_file(const std::filesystem::path& path);
void write_file_atomic(const std::filesystem::path& path, std::string_view content);
// fsync a file or a directory so a rename into it survives a crash.
void sync_path(const std::filesystem::path& path);

}  // namespace meshtrain::util

// A file checksum for detecting corruption (not tampering): FNV-1a over 64-bit little-endian words
// in four interleaved lanes, folded with the tail bytes and the length; "fnv4x64:<16 hex digits>".
#pragma once
#include <filesystem>
#include <span>
#include <string>

namespace meshtrain::util {

std::string checksum_of(std::span<const std::byte> bytes);
std::string file_checksum(const std::filesystem::path& path);

}  // namespace meshtrain::util

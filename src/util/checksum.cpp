#include "util/checksum.h"

#include <cstdint>
#include <cstdio>
#include <cstring>

#include "util/mapped_file.h"

namespace meshtrain::util {

namespace {

constexpr uint64_t kOffset = 0xcbf29ce484222325ULL;
constexpr uint64_t kPrime = 0x100000001b3ULL;

uint64_t mix(uint64_t h, uint64_t word) { return (h ^ word) * kPrime; }

}  // namespace

std::string checksum_of(std::span<const std::byte> bytes) {
  // Four independent lanes keep the multiplier busy; word i goes to lane i % 4.
  uint64_t lanes[4] = {kOffset, kOffset ^ 1, kOffset ^ 2, kOffset ^ 3};
  const size_t words = bytes.size() / 8;
  size_t i = 0;
  for (; i + 4 <= words; i += 4)
    for (int l = 0; l < 4; ++l) {
      uint64_t w;
      std::memcpy(&w, bytes.data() + 8 * (i + l), 8);
      lanes[l] = mix(lanes[l], w);
    }
  uint64_t h = kOffset;
  for (uint64_t lane : lanes) h = mix(h, lane);
  for (size_t b = 8 * i; b < bytes.size(); ++b) h = mix(h, static_cast<uint64_t>(bytes[b]));
  h = mix(h, bytes.size());
  char text[32];
  std::snprintf(text, sizeof text, "fnv4x64:%016llx", static_cast<unsigned long long>(h));
  return text;
}

std::string file_checksum(const std::filesystem::path& path) {
  MappedFile file(path);
  return checksum_of(file.bytes());
}

}  // namespace meshtrain::util

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), table-driven, a byte at a time: the
// checksum TFRecord framing uses. crc32c("123456789") == 0xE3069283.
#pragma once
#include <cstdint>
#include <string_view>

namespace meshtrain::util {

uint32_t crc32c(std::string_view bytes);

}  // namespace meshtrain::util

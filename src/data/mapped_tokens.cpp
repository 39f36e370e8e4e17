// Decoding of memory-mapped little-endian integer tokens into int64, one slice at a time.
// Elements are read with memcpy, so an unaligned data offset is fine.
#include "data/mapped_tokens.h"

#include <bit>
#include <cstring>
#include <limits>

#include "util/check.h"

namespace meshtrain::data {

static_assert(std::endian::native == std::endian::little,
              "token files are little-endian and are decoded in place");

namespace {

template <typename T>
void decode(const std::byte* src, int64_t length, int64_t* out) {
  for (int64_t i = 0; i < length; ++i) {
    T v;
    std::memcpy(&v, src + i * static_cast<int64_t>(sizeof(T)), sizeof(T));
    out[i] = static_cast<int64_t>(v);
  }
}

}  // namespace

MappedTokens::MappedTokens(std::unique_ptr<util::MappedFile> file, size_t offset, int64_t count,
                           TokenLayout layout)
    : file_(std::move(file)), offset_(offset), count_(count), layout_(layout) {
  const int w = layout_.width;
  MT_CHECK(w == 1 || w == 2 || w == 4 || w == 8, "token width must be 1, 2, 4 or 8 bytes, got ",
           w, " for ", file_->path());
  MT_CHECK(count_ > 0, file_->path(), ": no tokens");
  MT_CHECK(offset_ <= file_->size() &&
               static_cast<uint64_t>(count_) <= (file_->size() - offset_) / static_cast<size_t>(w),
           file_->path(), ": ", count_, " tokens of ", w, " bytes at offset ", offset_,
           " do not fit in ", file_->size(), " bytes");
}

void MappedTokens::read_into(int64_t start, int64_t length, int64_t* out) const {
  const std::byte* src = file_->bytes().data() + offset_ + start * layout_.width;
  switch (layout_.width * (layout_.is_signed ? -1 : 1)) {
    case 1: decode<uint8_t>(src, length, out); break;
    case -1: decode<int8_t>(src, length, out); break;
    case 2: decode<uint16_t>(src, length, out); break;
    case -2: decode<int16_t>(src, length, out); break;
    case 4: decode<uint32_t>(src, length, out); break;
    case -4: decode<int32_t>(src, length, out); break;
    case -8: decode<int64_t>(src, length, out); break;
    case 8:
      for (int64_t i = 0; i < length; ++i) {
        uint64_t v;
        std::memcpy(&v, src + i * 8, 8);
        MT_CHECK(v <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), file_->path(),
                 ": token ", start + i, " = ", v, " does not fit in int64");
        out[i] = static_cast<int64_t>(v);
      }
      break;
    default: fail("unreachable token layout width ", layout_.width);
  }
}

}  // namespace meshtrain::data

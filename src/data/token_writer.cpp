// The .bin header is 256 int32 (magic 20240520, version, count); the .npy header is padded to a
// fixed 128 bytes so that the count can be filled in after streaming.
#include "data/token_writer.h"

#include <cerrno>
#include <cstring>
#include <string>

#include "util/check.h"

namespace meshtrain::data {

namespace {
constexpr int32_t kLlmcMagic = 20240520;
constexpr size_t kNpyHeaderBytes = 128;
}  // namespace

TokenWriter::TokenWriter(const std::filesystem::path& path, int64_t vocab_size) : path_(path) {
  const std::string ext = path.extension().string();
  MT_CHECK(ext == ".bin" || ext == ".npy", path, ": output extension '", ext,
           "' is not supported (use .bin for llm.c tokens or .npy)");
  MT_CHECK(vocab_size > 0 && vocab_size <= (int64_t{1} << 32), path, ": vocabulary of ", vocab_size,
           " ids does not fit uint32");
  npy_ = ext == ".npy";
  width_ = vocab_size <= 65536 ? 2 : 4;
  partial_ = path;
  partial_ += ".partial";
  file_ = std::fopen(partial_.c_str(), "wb");
  MT_CHECK(file_, partial_, ": cannot create: ", std::strerror(errno));
  const std::string h = header(0);
  MT_CHECK(std::fwrite(h.data(), 1, h.size(), file_) == h.size(), partial_, ": write failed: ", std::strerror(errno));
}

TokenWriter::~TokenWriter() {
  if (!file_) return;
  std::fclose(file_);
  std::error_code ec;
  std::filesystem::remove(partial_, ec);  // an unfinished stream leaves nothing behind
}

std::string TokenWriter::header(int64_t count) const {
  if (npy_) {
    std::string dict = std::string("{'descr': '<u") + static_cast<char>('0' + width_) +
                       "', 'fortran_order': False, 'shape': (" + std::to_string(count) + ",), }";
    dict.resize(kNpyHeaderBytes - 10 - 1, ' ');
    dict += '\n';
    std::string out = "\x93NUMPY";
    out += '\x01';
    out += '\x00';
    out += static_cast<char>(dict.size() & 0xff);
    out += static_cast<char>(dict.size() >> 8);
    return out + dict;
  }
  MT_CHECK(count <= INT32_MAX, path_, ": ", count, " tokens do not fit the llm.c .bin header (int32 count); use .npy");
  std::string out(1024, '\0');
  const int32_t fields[3] = {kLlmcMagic, width_ == 2 ? 1 : 2, static_cast<int32_t>(count)};
  std::memcpy(out.data(), fields, sizeof(fields));
  return out;
}

void TokenWriter::write(const std::vector<int32_t>& ids) {
  buffer_.resize(ids.size() * width_);
  char* p = buffer_.data();
  for (int32_t id : ids) {
    const auto u = static_cast<uint32_t>(id);
    std::memcpy(p, &u, width_);  // little-endian hosts: the low bytes first
    p += width_;
  }
  MT_CHECK(std::fwrite(buffer_.data(), 1, buffer_.size(), file_) == buffer_.size(), partial_, ": write failed: ",
           std::strerror(errno));
  count_ += static_cast<int64_t>(ids.size());
}

int64_t TokenWriter::finish() {
  const std::string h = header(count_);
  MT_CHECK(std::fseek(file_, 0, SEEK_SET) == 0 && std::fwrite(h.data(), 1, h.size(), file_) == h.size(), partial_,
           ": write failed: ", std::strerror(errno));
  const int closed = std::fclose(file_);
  file_ = nullptr;
  MT_CHECK(closed == 0, partial_, ": write failed: ", std::strerror(errno));
  std::filesystem::rename(partial_, path_);
  return count_;
}

}  // namespace meshtrain::data

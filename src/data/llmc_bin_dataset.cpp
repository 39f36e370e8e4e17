// llm.c token shards (.bin): a header of 256 little-endian int32 — [0] magic 20240520,
// [1] version (1: uint16 tokens, 2: uint32 tokens), [2] token count — then the tokens from
// byte 1024. The file size must be exactly header + count tokens.
#include <cstring>
#include <memory>

#include "data/mapped_tokens.h"
#include "data/token_formats.h"
#include "util/check.h"

namespace meshtrain::data {

namespace {
constexpr int32_t kLlmcMagic = 20240520;
constexpr size_t kHeaderBytes = 256 * sizeof(int32_t);
}  // namespace

std::unique_ptr<TokenDataset> open_llmc_bin_dataset(const std::filesystem::path& path) {
  auto file = std::make_unique<util::MappedFile>(path);
  MT_CHECK(file->size() >= kHeaderBytes, path, ": llm.c .bin file is ", file->size(),
           " bytes, shorter than its ", kHeaderBytes, "-byte header");
  int32_t header[3];
  std::memcpy(header, file->bytes().data(), sizeof(header));
  MT_CHECK(header[0] == kLlmcMagic, path, ": bad llm.c .bin magic ", header[0], " (expected ",
           kLlmcMagic, ")");
  const int32_t version = header[1];
  MT_CHECK(version == 1 || version == 2, path, ": unsupported llm.c .bin version ", version,
           " (supported: 1 = uint16 tokens, 2 = uint32 tokens)");
  const int64_t count = header[2];
  const TokenLayout layout{version == 1 ? 2 : 4, false};
  MT_CHECK(count >= 0, path, ": llm.c .bin header gives a negative token count ", count);
  const uint64_t expected = kHeaderBytes + static_cast<uint64_t>(count) * layout.width;
  MT_CHECK(expected == file->size(), path, ": llm.c .bin header says ", count, " tokens of ",
           layout.width, " bytes (", expected, " bytes with the header) but the file has ",
           file->size(), " bytes");
  MT_CHECK(count > 0, path, ": token dataset is empty (llm.c .bin header count 0)");
  return std::make_unique<MappedTokens>(std::move(file), kHeaderBytes, count, layout);
}

}  // namespace meshtrain::data

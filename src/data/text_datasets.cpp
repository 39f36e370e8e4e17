// Text token datasets through the byte tokenizer (token = byte value, vocab 256): .txt is the
// whole file, memory-mapped as uint8 tokens (identical to encode_bytes of its content); .jsonl
// is the "text" field of each non-empty line, documents concatenated with no separator.
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <string_view>

#include "data/mapped_tokens.h"
#include "data/token_formats.h"
#include "util/check.h"
#include "util/mapped_file.h"

namespace meshtrain::data {

namespace {

// Bytes held in memory, one token per byte.
class ByteTokens : public TokenDataset {
 public:
  explicit ByteTokens(std::string bytes) : bytes_(std::move(bytes)) {}
  int64_t size() const override { return static_cast<int64_t>(bytes_.size()); }
  void read_into(int64_t start, int64_t length, int64_t* out) const override {
    for (int64_t i = 0; i < length; ++i)
      out[i] = static_cast<unsigned char>(bytes_[static_cast<size_t>(start + i)]);
  }

 private:
  std::string bytes_;
};

bool is_blank(std::string_view line) {
  return line.find_first_not_of(" \t\r") == std::string_view::npos;
}

}  // namespace

std::unique_ptr<TokenDataset> open_text_dataset(const std::filesystem::path& path) {
  auto file = std::make_unique<util::MappedFile>(path);
  MT_CHECK(file->size() > 0, path, ": token dataset is empty (0-byte text file)");
  const auto count = static_cast<int64_t>(file->size());
  return std::make_unique<MappedTokens>(std::move(file), 0, count, TokenLayout{1, false});
}

std::unique_ptr<TokenDataset> open_jsonl_dataset(const std::filesystem::path& path) {
  const util::MappedFile file(path);
  const std::string_view all(reinterpret_cast<const char*>(file.bytes().data()), file.size());
  std::string bytes;
  int64_t line_no = 0;
  for (size_t pos = 0; pos < all.size();) {
    size_t end = all.find('\n', pos);
    if (end == std::string_view::npos) end = all.size();
    const std::string_view line = all.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (is_blank(line)) continue;
    nlohmann::json doc;
    try {
      doc = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      fail(path, " line ", line_no, ": invalid JSON: ", e.what());
    }
    MT_CHECK(doc.is_object(), path, " line ", line_no,
             ": expected a JSON object, got JSON of type ", doc.type_name());
    const auto text = doc.find("text");
    MT_CHECK(text != doc.end(), path, " line ", line_no, ": JSON object has no \"text\" field");
    MT_CHECK(text->is_string(), path, " line ", line_no, ": \"text\" field is a ",
             text->type_name(), ", not a string");
    bytes += text->get_ref<const std::string&>();
  }
  MT_CHECK(!bytes.empty(), path, ": token dataset is empty (", line_no,
           " lines, no text in any \"text\" field)");
  return std::make_unique<ByteTokens>(std::move(bytes));
}

}  // namespace meshtrain::data

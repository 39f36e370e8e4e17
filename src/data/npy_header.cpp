// Parser for the .npy preamble and its header dict, a small subset of Python literal syntax:
// {'key': value, ...} with values a quoted string, True/False, or a tuple of integers.
#include "data/npy_header.h"

#include <cstring>
#include <limits>
#include <optional>
#include <string_view>

#include "util/check.h"

namespace meshtrain::data {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;

class DictParser {
 public:
  DictParser(std::string_view text, const std::filesystem::path& path) : s_(text), path_(path) {}

  NpyHeader parse() {
    NpyHeader h;
    bool have_descr = false, have_order = false, have_shape = false;
    expect('{');
    while (true) {
      skip_ws();
      if (peek() == '}') break;
      const std::string key = parse_string();
      expect(':');
      skip_ws();
      if (key == "descr") {
        if (peek() != '\'' && peek() != '"') {
          fail(path_, ": .npy descr at header offset ", pos_,
               " is not a simple dtype string (structured arrays are not token arrays): ",
               s_.substr(pos_, 40));
        }
        h.descr = parse_string();
        have_descr = true;
      } else if (key == "fortran_order") {
        h.fortran_order = parse_bool();
        have_order = true;
      } else if (key == "shape") {
        h.shape = parse_int_tuple();
        have_shape = true;
      } else {
        fail(path_, ": unexpected key '", key, "' in .npy header: ", s_);
      }
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      skip_ws();
      if (peek() != '}') bad("',' or '}'");
    }
    MT_CHECK(have_descr && have_order && have_shape, path_,
             ": .npy header lacks one of 'descr', 'fortran_order', 'shape': ", s_);
    return h;
  }

 private:
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' ||
                                s_[pos_] == '\r'))
      ++pos_;
  }
  [[noreturn]] void bad(std::string_view wanted) const {
    fail(path_, ": malformed .npy header: expected ", wanted, " at offset ", pos_, " in: ", s_);
  }
  void expect(char c) {
    skip_ws();
    if (peek() != c) bad(std::string("'") + c + "'");
    ++pos_;
  }
  std::string parse_string() {
    skip_ws();
    const char quote = peek();
    if (quote != '\'' && quote != '"') bad("a quoted string");
    const size_t end = s_.find(quote, pos_ + 1);
    if (end == std::string_view::npos) bad("a closing quote");
    std::string out(s_.substr(pos_ + 1, end - pos_ - 1));
    pos_ = end + 1;
    return out;
  }
  bool parse_bool() {
    if (s_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (s_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    bad("True or False");
  }
  std::vector<int64_t> parse_int_tuple() {
    std::vector<int64_t> out;
    expect('(');
    while (true) {
      skip_ws();
      if (peek() == ')') break;
      if (peek() < '0' || peek() > '9') bad("a non-negative integer");
      int64_t v = 0;
      while (peek() >= '0' && peek() <= '9') {
        const int d = peek() - '0';
        if (v > (std::numeric_limits<int64_t>::max() - d) / 10) bad("a dimension below 2^63");
        v = v * 10 + d;
        ++pos_;
      }
      if (peek() == 'L') ++pos_;  // Python 2 long suffix
      out.push_back(v);
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      skip_ws();
      if (peek() != ')') bad("',' or ')'");
    }
    ++pos_;
    return out;
  }

  std::string_view s_;
  const std::filesystem::path& path_;
  size_t pos_ = 0;
};

uint32_t read_le(const std::byte* p, int n) {
  uint32_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<uint32_t>(p[i]);
  return v;
}

}  // namespace

NpyHeader parse_npy_header(std::span<const std::byte> file, const std::filesystem::path& path) {
  MT_CHECK(file.size() >= kMagicLen + 2 && std::memcmp(file.data(), kMagic, kMagicLen) == 0, path,
           " is not a .npy file: it does not start with the magic \"\\x93NUMPY\"");
  const int major = static_cast<int>(file[6]);
  const int minor = static_cast<int>(file[7]);
  int len_bytes = 0;
  if (major == 1 && minor == 0) {
    len_bytes = 2;
  } else if ((major == 2 || major == 3) && minor == 0) {
    len_bytes = 4;
  } else {
    fail(path, ": unsupported .npy format version ", major, ".", minor,
         " (supported: 1.0, 2.0, 3.0)");
  }
  const size_t header_start = kMagicLen + 2 + static_cast<size_t>(len_bytes);
  MT_CHECK(file.size() >= header_start, path, ": .npy file of ", file.size(),
           " bytes ends inside its header length field");
  const size_t header_len = read_le(file.data() + kMagicLen + 2, len_bytes);
  MT_CHECK(header_len <= file.size() - header_start, path, ": .npy header length ", header_len,
           " runs past the end of the ", file.size(), "-byte file");
  const std::string_view text(reinterpret_cast<const char*>(file.data() + header_start),
                              header_len);
  const size_t last = text.find_last_not_of(" \t\r\n");  // drop numpy's padding
  NpyHeader h = DictParser(text.substr(0, last == std::string_view::npos ? 0 : last + 1), path)
                    .parse();
  h.major_version = major;
  h.minor_version = minor;
  h.data_offset = header_start + header_len;
  return h;
}

}  // namespace meshtrain::data

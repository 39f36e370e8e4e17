// NFC against Python's unicodedata: every code point alone and followed by U+0301 (which many
// compose with), and the cases that exercise each rule: reordering, Hangul, exclusions,
// singletons, blocking, a leading mark, ill-formed bytes.
#include "data/unicode_nfc.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "data/utf8.h"
#include "support/run_command.h"

namespace meshtrain::data {
namespace {

std::string nfc(std::string_view s) {
  std::string out;
  to_nfc(s, out);
  return out;
}

}  // namespace

TEST(UnicodeNfc, RulesOnKnownCases) {
  EXPECT_EQ(nfc("plain ascii"), "plain ascii");
  EXPECT_EQ(nfc("e\u0301te\u0301"), "\u00e9t\u00e9");
  EXPECT_EQ(nfc("a\u0302\u0323"), "\u1ead");         // dot below (220) sorts before circumflex (230)
  EXPECT_EQ(nfc("\u1100\u1161\u11a8"), "\uac01");    // Hangul L V T
  EXPECT_EQ(nfc("\uac00\u11a8"), "\uac01");          // Hangul LV T
  EXPECT_EQ(nfc("\u0958"), "\u0915\u093c");          // excluded from composition
  EXPECT_EQ(nfc("\u212b"), "\u00c5");                // singleton: Angstrom sign
  EXPECT_EQ(nfc("a\u0301\u0301"), "\u00e1\u0301");   // the second acute is blocked
  EXPECT_EQ(nfc("\u0301x"), "\u0301x");              // a leading mark has no starter
  EXPECT_EQ(nfc("\xff" "e\u0301\xc3"), "\xff\u00e9\xc3");  // ill-formed bytes pass through
}

TEST(UnicodeNfc, EveryCodePointAloneAndWithAnAcuteMatchesPython) {
  const auto dir = std::filesystem::temp_directory_path() / ("mt_nfc_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto file = dir / "nfc.txt";
  const std::string script =
      "import sys, unicodedata\n"
      "with open(sys.argv[1], 'w', encoding='utf-8', newline='') as f:\n"
      "    for cp in range(0x110000):\n"
      "        if 0xD800 <= cp < 0xE000 or cp == 0x0A: continue\n"
      "        for s in (chr(cp), chr(cp) + '\\u0301'):\n"
      "            f.write(s + '\\t' + unicodedata.normalize('NFC', s) + '\\n')\n";
  std::ofstream(dir / "nfc.py") << script;
  auto r = testing::run_command(testing::kPython + " " + (dir / "nfc.py").string() + " " + file.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream in(file);
  int64_t checked = 0, wrong = 0;
  for (std::string line; std::getline(in, line);) {
    const auto tab = line.find('\t', 1);  // a tab code point is its own input
    ASSERT_NE(tab, std::string::npos);
    const std::string input = line.substr(0, tab), want = line.substr(tab + 1);
    if (nfc(input) != want && ++wrong <= 5) ADD_FAILURE() << "NFC of '" << input << "'";
    ++checked;
  }
  EXPECT_EQ(wrong, 0);
  EXPECT_GT(checked, 2 * 1100000);
  std::filesystem::remove_all(dir);
}

}  // namespace meshtrain::data

// Token dataset readers: every format's tokens read back exactly, and every malformed file
// rejected with a message naming the offending value.
#include "data/token_dataset.h"

#include <gtest/gtest.h>

#include <limits>

#include "data/byte_tokenizer.h"
#include "test_files.h"

namespace meshtrain::data {
namespace {

using testing::expect_error;
using testing::TempDir;
using testing::to_vector;
using testing::write_bytes;
using Ints = std::vector<int64_t>;

Ints read_all(const std::filesystem::path& path) {
  auto ds = open_token_dataset(path);
  return to_vector(ds->slice(0, ds->size()));
}

TEST(NpyDataset, V1LittleEndianUint16) {
  TempDir dir;
  const Ints values{0, 1, 65535, 300, 7};
  auto ds = open_token_dataset(write_bytes(dir / "a.npy", testing::npy_of("<u2", values)));
  EXPECT_EQ(ds->size(), 5);
  EXPECT_EQ(to_vector(ds->slice(0, 5)), values);
  EXPECT_EQ(to_vector(ds->slice(2, 2)), (Ints{65535, 300}));
  EXPECT_EQ(ds->slice(1, 3).scalar_type(), at::kLong);
  EXPECT_EQ(ds->max_token(), 65535);
  EXPECT_EQ(ds->max_token(), 65535);  // cached
}

TEST(NpyDataset, ReadsNumpySaveOutputVerbatim) {
  TempDir dir;
  // The exact bytes np.save(f, np.arange(5, dtype='<u2')) writes (header padded to 128 bytes).
  std::string bytes("\x93NUMPY\x01\x00v\x00", 10);
  bytes += "{'descr': '<u2', 'fortran_order': False, 'shape': (5,), }";
  bytes += std::string(60, ' ') + "\n";
  ASSERT_EQ(bytes.size(), 128u);
  bytes += testing::le_bytes({0, 1, 2, 3, 4}, 2);
  EXPECT_EQ(read_all(write_bytes(dir / "np.npy", bytes)), (Ints{0, 1, 2, 3, 4}));
}

TEST(NpyDataset, V1Int64KeepsNegativeAndLargeValues) {
  TempDir dir;
  const Ints values{-5, 0, int64_t{1} << 40, 123, std::numeric_limits<int64_t>::max()};
  auto ds = open_token_dataset(write_bytes(dir / "a.npy", testing::npy_of("<i8", values)));
  EXPECT_EQ(to_vector(ds->slice(0, 5)), values);
  EXPECT_EQ(to_vector(ds->slice(1, 2)), (Ints{0, int64_t{1} << 40}));
}

TEST(NpyDataset, V1PipeUint8) {
  TempDir dir;
  const Ints values{0, 255, 128, 3};
  EXPECT_EQ(read_all(write_bytes(dir / "a.npy", testing::npy_of("|u1", values))), values);
}

TEST(NpyDataset, EveryIntegerDtypeAndVersion) {
  TempDir dir;
  struct Case {
    std::string descr;
    Ints values;
    int major;
  };
  const std::vector<Case> cases{
      {"|i1", {-128, 127, 0, -1}, 1},
      {"<i2", {-32768, 32767, 5}, 2},
      {"<i4", {-2147483648LL, 2147483647, 9}, 3},
      {"<u4", {4294967295LL, 0, 70000}, 2},
      {"<u8", {int64_t{1} << 62, 1}, 1},
      {"=u2", {513, 2}, 1},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.descr);
    const auto path = write_bytes(dir / "a.npy", testing::npy_of(c.descr, c.values, c.major));
    EXPECT_EQ(read_all(path), c.values);
  }
}

TEST(NpyDataset, Fortran1DIsAcceptedAndUnpaddedHeaderWorks) {
  TempDir dir;
  // fortran_order has no meaning for 1-D; a header without numpy's 64-byte padding still parses.
  std::string bytes = "\x93NUMPY";
  bytes += std::string("\x01\x00", 2);
  const std::string dict = "{\"descr\":\"<u2\",\"fortran_order\":True,\"shape\":(3L,)}";
  bytes += testing::le_bytes({static_cast<int64_t>(dict.size())}, 2) + dict;
  bytes += testing::le_bytes({10, 20, 30}, 2);
  EXPECT_EQ(read_all(write_bytes(dir / "odd.npy", bytes)), (Ints{10, 20, 30}));
}

TEST(NpyDataset, RejectsMalformedFiles) {
  TempDir dir;
  using testing::npy_bytes;
  using testing::npy_dict;
  const std::string data8 = testing::le_bytes({1, 2, 3, 4, 5, 6}, 8);
  struct Case {
    std::string name;
    std::string bytes;
    std::vector<std::string> phrases;
  };
  std::string v4 = npy_bytes(npy_dict("<i8", "(6,)"), data8, 2);
  v4[6] = 4;
  const std::vector<Case> cases{
      {"magic", "NUMPY not really", {"magic", "bad_magic.npy"}},
      {"version", v4, {"version 4.0"}},
      {"fortran", npy_bytes(npy_dict("<i8", "(2, 3)", true), data8),
       {"fortran_order=True", "(2, 3)"}},
      {"float", npy_bytes(npy_dict("<f4", "(3,)"), data8), {"'<f4'", "not an integer dtype"}},
      {"bool", npy_bytes(npy_dict("|b1", "(3,)"), data8), {"'|b1'", "not an integer dtype"}},
      {"big_endian", npy_bytes(npy_dict(">i4", "(3,)"), data8), {"'>i4'", "big-endian"}},
      {"two_d", npy_bytes(npy_dict("<i8", "(2, 3)"), data8), {"(2, 3)", "must be 1-D"}},
      {"scalar", npy_bytes(npy_dict("<i8", "()"), data8), {"()", "must be 1-D"}},
      {"truncated", npy_bytes(npy_dict("<i8", "(7,)"), data8),
       {"truncated", "(7,)", "48 follow"}},
      {"empty", npy_bytes(npy_dict("<i8", "(0,)"), ""), {"empty"}},
      {"structured", npy_bytes("{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': (1,)}",
                               data8),
       {"structured"}},
      {"missing_key", npy_bytes("{'descr': '<i8', 'shape': (6,)}", data8), {"lacks", "(6,)}"}},
      {"header_len", std::string("\x93NUMPY\x01\x00\xff\x00{}", 12), {"header length 255"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto path = write_bytes(dir / ("bad_" + c.name + ".npy"), c.bytes);
    expect_error([&] { open_token_dataset(path); }, c.phrases);
  }
}

TEST(NpyDataset, Uint64AboveInt64MaxIsAnErrorOnRead) {
  TempDir dir;
  const std::string bytes = testing::npy_bytes(
      testing::npy_dict("<u8", "(2,)"),
      testing::le_bytes({1}, 8) + std::string(8, '\xff'));
  auto ds = open_token_dataset(write_bytes(dir / "big.npy", bytes));
  EXPECT_EQ(to_vector(ds->slice(0, 1)), (Ints{1}));
  expect_error([&] { ds->slice(0, 2); }, {"18446744073709551615", "int64"});
}

TEST(LlmcBinDataset, Version1Uint16AndVersion2Uint32) {
  TempDir dir;
  const Ints v1{0, 50256, 65535, 1};
  EXPECT_EQ(read_all(write_bytes(dir / "v1.bin", testing::llmc_bin(20240520, 1, 4, v1, 2))), v1);
  const Ints v2{4000000000LL, 0, 128000};
  auto ds =
      open_token_dataset(write_bytes(dir / "v2.bin", testing::llmc_bin(20240520, 2, 3, v2, 4)));
  EXPECT_EQ(to_vector(ds->slice(0, 3)), v2);
  EXPECT_EQ(ds->max_token(), 4000000000LL);
}

TEST(LlmcBinDataset, RejectsMalformedFiles) {
  TempDir dir;
  using testing::llmc_bin;
  const Ints toks{1, 2, 3};
  struct Case {
    std::string name;
    std::string bytes;
    std::vector<std::string> phrases;
  };
  const std::vector<Case> cases{
      {"magic", llmc_bin(12345, 1, 3, toks, 2), {"magic 12345", "20240520"}},
      {"version", llmc_bin(20240520, 3, 3, toks, 2), {"version 3"}},
      {"count", llmc_bin(20240520, 1, 5, toks, 2), {"says 5 tokens", "1030 bytes"}},
      {"width", llmc_bin(20240520, 2, 3, toks, 2), {"says 3 tokens of 4 bytes"}},
      {"short", std::string(100, '\0'), {"100 bytes", "header"}},
      {"empty", llmc_bin(20240520, 1, 0, {}, 2), {"empty"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto path = write_bytes(dir / ("bad_" + c.name + ".bin"), c.bytes);
    expect_error([&] { open_token_dataset(path); }, c.phrases);
  }
}

TEST(TextDataset, TokensAreTheFileBytes) {
  TempDir dir;
  const std::string text = std::string("h\xc3\xa9llo\n\x00\xff", 9);
  auto ds = open_token_dataset(write_bytes(dir / "a.txt", text));
  EXPECT_EQ(to_vector(ds->slice(0, ds->size())), encode_bytes(text));
  EXPECT_EQ(ds->max_token(), 255);
  expect_error([&] { open_token_dataset(write_bytes(dir / "e.txt", "")); }, {"empty"});
}

TEST(JsonlDataset, ConcatenatesTextFieldsInOrder) {
  TempDir dir;
  const std::string file =
      "{\"text\": \"ab\", \"id\": 1}\n"
      "\n"
      "   \r\n"
      "{\"id\": 2, \"text\": \"\\u00e9\\n\"}\r\n"
      "{\"text\": \"\"}\n"
      "{\"text\": \"z\"}";
  const auto path = write_bytes(dir / "a.jsonl", file);
  EXPECT_EQ(read_all(path), encode_bytes("ab\xc3\xa9\nz"));
}

TEST(JsonlDataset, RejectsBadLinesNamingTheLine) {
  TempDir dir;
  struct Case {
    std::string name;
    std::string bytes;
    std::vector<std::string> phrases;
  };
  const std::vector<Case> cases{
      {"not_json", "{\"text\": \"a\"}\n\n{oops\n", {"line 3", "invalid JSON"}},
      {"no_text", "{\"text\": \"a\"}\n{\"body\": \"b\"}\n", {"line 2", "no \"text\" field"}},
      {"number", "{\"text\": 5}\n", {"line 1", "number", "not a string"}},
      {"array", "{\"text\": \"a\"}\n[1, 2]\n", {"line 2", "expected a JSON object", "type array"}},
      {"empty", "\n{\"text\": \"\"}\n\n", {"empty"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto path = write_bytes(dir / ("bad_" + c.name + ".jsonl"), c.bytes);
    expect_error([&] { open_token_dataset(path); }, c.phrases);
  }
}

TEST(TokenDataset, UnknownExtensionListsSupportedOnes) {
  TempDir dir;
  const auto path = write_bytes(dir / "a.csv", "1,2,3");
  expect_error([&] { open_token_dataset(path); }, {"'.csv'", ".npy, .bin, .txt, .jsonl"});
}

TEST(TokenDataset, MissingFileAndOutOfRangeSlice) {
  TempDir dir;
  expect_error([&] { open_token_dataset(dir / "nope.txt"); }, {"cannot open", "nope.txt"});
  auto ds = open_token_dataset(write_bytes(dir / "a.txt", "abcd"));
  expect_error([&] { ds->slice(2, 3); }, {"[2, 5)", "4 tokens"});
  expect_error([&] { ds->slice(-1, 1); }, {"[-1, 0)"});
  EXPECT_EQ(ds->slice(4, 0).numel(), 0);
}

TEST(TokenDataset, DefaultCorpusOpens) {
  auto ds = open_token_dataset(std::filesystem::path(MESHTRAIN_SOURCE_DIR) / "data/corpus.txt");
  EXPECT_GT(ds->size(), 100000);
  EXPECT_LT(ds->max_token(), kByteVocabSize);
}

TEST(ByteTokenizer, RoundTripsEveryByte) {
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  const auto ids = encode_bytes(all);
  ASSERT_EQ(ids.size(), 256u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(ids[b], b);
  EXPECT_EQ(decode_bytes(ids), all);
  EXPECT_EQ(decode_bytes(encode_bytes("caf\xc3\xa9 \xff")), "caf\xc3\xa9 \xff");
  EXPECT_EQ(decode_bytes({104, -1, 105, 256, 1000}), "hi");  // out-of-vocab ids skipped
}

}  // namespace
}  // namespace meshtrain::data

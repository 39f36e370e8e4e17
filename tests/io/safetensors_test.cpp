// Tests for io/safetensors: round trips, sliced reads that touch only the slice's bytes, the
// header layout, every malformed-file case rejected at open, and compatibility with Python's
// safetensors library (the Python that CMake found with transformers).
#include "io/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>

#include "util/check.h"
#include "util/files.h"

namespace meshtrain::io {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StrEq;
using ::testing::ThrowsMessage;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("meshtrain_io_" + std::string(test->name()) + "_" +
                                        std::to_string(::getpid()) + "_" +
                                        std::to_string(counter++));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A file of: u64 little-endian header length (header.size() unless given), header, data.
  fs::path write_raw(const std::string& header, const std::string& data = "",
                     std::optional<uint64_t> header_len = std::nullopt) {
    const fs::path path = dir_ / ("raw" + std::to_string(raw_count_++) + ".safetensors");
    const uint64_t n = header_len.value_or(header.size());
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    std::ofstream(path, std::ios::binary) << bytes << header << data;
    return path;
  }

  // The message of the Error that opening path throws ("" if it opens).
  static std::string open_error(const fs::path& path) {
    try {
      SafetensorsFile file(path);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

  fs::path dir_;
  int raw_count_ = 0;
};

at::Tensor ramp(std::vector<int64_t> shape, at::ScalarType dtype) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return (at::arange(n, at::kDouble) * 0.25 - 3).reshape(shape).to(dtype);
}

TEST_F(SafetensorsTest, RoundTripsDtypesExactly) {
  const std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"f32", at::randn({3, 5})},
      {"f16", at::randn({7}).to(at::kHalf)},
      {"bf16", at::randn({2, 3, 4}).to(at::kBFloat16)},
      {"i64", at::randint(-(int64_t{1} << 40), int64_t{1} << 40, {4, 2}, at::kLong)},
      {"f64", at::randn({2}, at::kDouble)},
      {"i32", at::arange(-5, 5, at::kInt)},
      {"i16", at::arange(-5, 5, at::kShort)},
      {"i8", at::arange(-5, 5, at::kChar)},
      {"u8", at::arange(0, 250, 7, at::kByte)},
      {"bool", at::tensor({1, 0, 1}).to(at::kBool)},
      {"scalar", at::scalar_tensor(2.5)},
      {"empty", at::zeros({0, 4})},
      {"strided", at::randn({4, 6}).t()},  // non-contiguous: stored as its contiguous copy
  };
  const fs::path path = dir_ / "t.safetensors";
  save_safetensors(path, tensors, {{"format", "pt"}, {"step", "12"}});
  EXPECT_FALSE(fs::exists(path.string() + ".tmp"));

  SafetensorsFile file(path);
  EXPECT_EQ(file.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"step", "12"}}));
  EXPECT_EQ(file.names().size(), tensors.size());
  uint64_t expected_bytes = 0;
  for (const auto& [name, t] : tensors) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(file.contains(name));
    EXPECT_EQ(file.info(name).dtype, t.scalar_type());
    EXPECT_EQ(file.info(name).shape, t.sizes().vec());
    const at::Tensor back = file.read(name);
    EXPECT_TRUE(back.is_contiguous());
    EXPECT_EQ(back.scalar_type(), t.scalar_type());
    EXPECT_TRUE(at::equal(back, t));
    expected_bytes += t.numel() * t.element_size();
  }
  EXPECT_EQ(file.bytes_read(), expected_bytes);
  EXPECT_TRUE(file.info("scalar").shape.empty());
  EXPECT_FALSE(file.contains("nope"));
  try {
    file.read("nope");
    FAIL() << "read of a missing tensor did not throw";
  } catch (const Error& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("no tensor \"nope\""));
  }
}

TEST_F(SafetensorsTest, DefaultAndEmptyMetadata) {
  save_safetensors(dir_ / "a.safetensors", {{"x", at::ones({2})}});
  EXPECT_EQ(SafetensorsFile(dir_ / "a.safetensors").metadata(),
            (std::map<std::string, std::string>{{"format", "pt"}}));
  save_safetensors(dir_ / "b.safetensors", {{"x", at::ones({2})}}, {});
  EXPECT_TRUE(SafetensorsFile(dir_ / "b.safetensors").metadata().empty());
  EXPECT_THAT(util::read_file(dir_ / "b.safetensors"), ::testing::Not(HasSubstr("__metadata__")));
}

TEST_F(SafetensorsTest, HeaderIsPaddedToEightBytes) {
  for (const std::string name : {"a", "ab", "abc", "abcd", "abcde", "abcdef", "abcdefg"}) {
    const fs::path path = dir_ / (name + ".safetensors");
    save_safetensors(path, {{name, at::ones({3})}});
    const std::string bytes = util::read_file(path);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
    EXPECT_EQ((8 + n) % 8, 0u) << name;
    EXPECT_EQ(bytes.size(), 8 + n + 3 * sizeof(float)) << name;
    EXPECT_EQ(bytes[8], '{');
  }
}

TEST_F(SafetensorsTest, ReadSliceMatchesNarrowAndReadsOnlyTheSlice) {
  const at::Tensor t3 = ramp({4, 6, 5}, at::kFloat);
  const at::Tensor t2 = ramp({6, 10}, at::kBFloat16);
  const fs::path path = dir_ / "s.safetensors";
  save_safetensors(path, {{"t3", t3}, {"t2", t2}});
  SafetensorsFile file(path);

  struct Case {
    std::string name;
    int64_t dim, start, length;
  };
  for (const Case& c : {Case{"t3", 0, 1, 2}, Case{"t3", 1, 2, 3}, Case{"t3", 2, 1, 3},
                        Case{"t3", 1, 0, 6}, Case{"t3", 2, 4, 1}, Case{"t3", 1, 6, 0},
                        Case{"t2", 0, 3, 3}, Case{"t2", 1, 5, 5}}) {
    SCOPED_TRACE(c.name + " dim " + std::to_string(c.dim));
    const at::Tensor full = c.name == "t3" ? t3 : t2;
    const uint64_t before = file.bytes_read();
    const at::Tensor slice = file.read_slice(c.name, c.dim, c.start, c.length);
    const at::Tensor expected = full.narrow(c.dim, c.start, c.length);
    EXPECT_TRUE(slice.is_contiguous());
    EXPECT_EQ(slice.sizes(), expected.sizes());
    EXPECT_TRUE(at::equal(slice, expected));
    EXPECT_EQ(file.bytes_read() - before,
              static_cast<uint64_t>(expected.numel() * expected.element_size()));
  }
}

TEST_F(SafetensorsTest, ReadSliceRejectsBadRanges) {
  const fs::path path = dir_ / "s.safetensors";
  save_safetensors(path, {{"w", at::zeros({4, 6})}, {"s", at::scalar_tensor(1.0)}});
  SafetensorsFile file(path);
  auto message = [&](const std::string& name, int64_t dim, int64_t start, int64_t length) {
    try {
      file.read_slice(name, dim, start, length);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_THAT(message("w", 2, 0, 1), HasSubstr("dim 2 is out of range for shape [4, 6]"));
  EXPECT_THAT(message("w", -1, 0, 1), HasSubstr("dim -1 is out of range"));
  EXPECT_THAT(message("s", 0, 0, 1), HasSubstr("out of range for shape []"));
  EXPECT_THAT(message("w", 1, 4, 3), HasSubstr("[start 4, length 3] does not fit dim 1 of size 6"));
  EXPECT_THAT(message("w", 0, -1, 2), HasSubstr("[start -1, length 2]"));
  EXPECT_THAT(message("w", 0, 1, -1), HasSubstr("[start 1, length -1]"));
  EXPECT_THAT(message("w", 0, 5, 0), HasSubstr("[start 5, length 0]"));
  EXPECT_THAT(message("w", 0, 2, INT64_MAX), HasSubstr("does not fit"));
  EXPECT_THAT(message("x", 0, 0, 1), HasSubstr("no tensor \"x\""));
  EXPECT_EQ(file.bytes_read(), 0u);
}

TEST_F(SafetensorsTest, WriterRejectsBadInput) {
  auto message = [&](const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
    try {
      save_safetensors(dir_ / "w.safetensors", tensors);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_THAT(message({{"a", at::ones({1})}, {"a", at::ones({1})}}), HasSubstr("appears twice"));
  EXPECT_THAT(message({{"c", at::ones({1}, at::kComplexFloat)}}),
              HasSubstr("cannot be stored in safetensors"));
  EXPECT_THAT(message({{"__metadata__", at::ones({1})}}), HasSubstr("__metadata__"));
  EXPECT_THAT(message({{"u", at::Tensor()}}), HasSubstr("undefined tensor \"u\""));
  EXPECT_FALSE(fs::exists(dir_ / "w.safetensors"));
  EXPECT_FALSE(fs::exists(dir_ / "w.safetensors.tmp"));
}

TEST_F(SafetensorsTest, DtypeNames) {
  for (const char* name : {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"})
    EXPECT_EQ(dtype_name(dtype_from_name(name)), name);
  EXPECT_THAT([] { dtype_from_name("F8_E4M3"); },
              ThrowsMessage<Error>(StrEq(
                  "unknown safetensors dtype \"F8_E4M3\" (known: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)")));
  EXPECT_THAT([] { dtype_from_name("f32"); }, ThrowsMessage<Error>(HasSubstr("unknown safetensors dtype \"f32\"")));
}

TEST_F(SafetensorsTest, AcceptsZeroSizeTensorsAndUnpaddedHeaders) {
  const std::string header =
      R"({"e":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]},)"
      R"("z":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
      R"("x":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})";
  const fs::path path = write_raw(header, std::string("\x07\x00\x00\x00", 4));
  SafetensorsFile file(path);
  EXPECT_EQ(file.read("e").sizes(), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(file.read("z").numel(), 0);
  EXPECT_EQ(file.read("x").item<int32_t>(), 7);
  EXPECT_TRUE(file.metadata().empty());
}

TEST_F(SafetensorsTest, RejectsMalformedFiles) {
  const std::string f32_entry = R"("dtype":"F32","shape":[2],"data_offsets":[0,8])";
  const std::string data(16, '\0');
  struct Case {
    std::string what;
    fs::path path;
    std::string phrase;
  };
  std::vector<Case> cases = {
      {"empty header", write_raw("", "", 0), "header is not valid JSON"},
      {"header length past the end", write_raw("{}", "", 40), "runs past the end of the file"},
      {"header length absurd", write_raw("{}", "", uint64_t{1} << 40), "larger than the limit"},
      {"not JSON", write_raw("{\"a\": ", data), "header is not valid JSON"},
      {"not an object", write_raw("[1, 2]", data), "not a JSON object but a JSON array"},
      {"entry not an object", write_raw(R"({"a": 3})", data), "entry is a JSON number"},
      {"missing dtype", write_raw(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", data),
       "missing \"dtype\""},
      {"missing shape", write_raw(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", data),
       "missing \"shape\""},
      {"missing offsets", write_raw(R"({"a":{"dtype":"F32","shape":[2]}})", data),
       "missing \"data_offsets\""},
      {"dtype not a string",
       write_raw(R"({"a":{"dtype":32,"shape":[2],"data_offsets":[0,8]}})", data),
       "dtype is a JSON number"},
      {"shape not an array",
       write_raw(R"({"a":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", data),
       "is not an array of integers"},
      {"shape holds a float",
       write_raw(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", data),
       "not an integer"},
      {"offsets wrong length",
       write_raw(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", data),
       "is not [begin, end]"},
      {"offsets negative",
       write_raw(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", data),
       "is not [begin, end]"},
      {"offsets strings",
       write_raw(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":["0","8"]}})", data),
       "is not [begin, end]"},
      {"unknown dtype",
       write_raw(R"({"a":{"dtype":"F8_E5M2","shape":[2],"data_offsets":[0,8]}})", data),
       "unknown safetensors dtype \"F8_E5M2\""},
      {"negative dim",
       write_raw(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data),
       "negative dimension -2"},
      {"numel overflow",
       write_raw(R"({"a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
                 data),
       "overflows 64 bits"},
      {"bytes overflow",
       write_raw(R"({"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}})",
                 data),
       "byte count of shape [4611686018427387904] overflows"},
      {"dim above int64",
       write_raw(R"({"a":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,8]}})",
                 data),
       "overflows 64 bits"},
      {"begin after end",
       write_raw(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", data),
       "data_offsets begin 8 > end 4"},
      {"end past the data",
       write_raw(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})", data),
       "end 20 is past the end of the data section (16 bytes)"},
      {"end far past the data",
       write_raw(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551600,18446744073709551608]}})",
                 data),
       "is past the end of the data section"},
      {"size mismatch",
       write_raw(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data),
       "span 8 bytes, but F32 of shape [3] needs 3 x 4 = 12"},
      {"overlap",
       write_raw(R"({"a":{)" + f32_entry + R"(},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                 data),
       "overlap"},
      {"range nested in another",
       write_raw(R"({"a":{"dtype":"U8","shape":[16],"data_offsets":[0,16]},)"
                 R"("b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]},)"
                 R"("c":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}})",
                 data),
       "overlap"},
      {"metadata not strings",
       write_raw(R"({"__metadata__":{"step":3},"a":{)" + f32_entry + "}}", data),
       "__metadata__ value of \"step\" is a JSON number"},
      {"metadata not an object",
       write_raw(R"({"__metadata__":[1],"a":{)" + f32_entry + "}}", data),
       "__metadata__ is a JSON array"},
  };
  // Shorter than the 8-byte length field.
  const fs::path short_file = dir_ / "short.safetensors";
  std::ofstream(short_file, std::ios::binary) << "abc";
  cases.push_back({"3-byte file", short_file, "too short: 3 bytes"});
  const fs::path empty_file = dir_ / "empty.safetensors";
  std::ofstream(empty_file, std::ios::binary).flush();
  cases.push_back({"empty file", empty_file, "too short: 0 bytes"});

  for (const Case& c : cases) {
    const std::string msg = open_error(c.path);
    EXPECT_THAT(msg, HasSubstr(c.phrase)) << c.what;
    EXPECT_THAT(msg, HasSubstr(c.path.filename().string())) << c.what << ": names the file";
  }
  // The tensor is named too.
  EXPECT_THAT(open_error(write_raw(R"({"w.q":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
                                   data)),
              HasSubstr("tensor \"w.q\""));
}

// --- compatibility with Python's safetensors library -------------------------------------------

std::string python() { return MESHTRAIN_PYTHON; }

// Runs a Python script; returns its exit status and leaves its output in out.
int run_python(const fs::path& dir, const std::string& script, std::string& out) {
  const fs::path py = dir / "check.py", log = dir / "check.log";
  std::ofstream(py) << script;
  const std::string cmd = str_cat("'", python(), "' '", py.string(), "' > '", log.string(), "' 2>&1");
  const int rc = std::system(cmd.c_str());
  out = util::read_file(log);
  return rc;
}

TEST_F(SafetensorsTest, PythonReadsOurFiles) {
  const fs::path path = dir_ / "ours.safetensors";
  save_safetensors(path,
                   {{"f32", ramp({3, 4}, at::kFloat)},
                    {"f16", ramp({5}, at::kHalf)},
                    {"f64", ramp({2, 1, 3}, at::kDouble)},
                    {"i64", at::arange(-3, 3, at::kLong) * (int64_t{1} << 40)},
                    {"i32", at::arange(-4, 4, at::kInt).reshape({2, 4})},
                    {"i16", at::arange(-2, 2, at::kShort)},
                    {"i8", at::arange(-2, 2, at::kChar)},
                    {"u8", at::arange(250, 256, at::kByte)},
                    {"b", at::tensor({1, 0}).to(at::kBool)},
                    {"scalar", at::scalar_tensor(1.5, at::kDouble)},
                    {"t", ramp({4, 3}, at::kFloat).t()}},
                   {{"format", "pt"}, {"who", "meshtrain"}});
  const std::string script = R"(
import json, struct, numpy as np
from safetensors.numpy import load_file
from safetensors import safe_open
p = ')" + path.string() + R"('
t = load_file(p)
def ramp(shape, dt):
    return (np.arange(int(np.prod(shape)), dtype=np.float64) * 0.25 - 3).reshape(shape).astype(dt)
want = {
    'f32': ramp((3, 4), np.float32), 'f16': ramp((5,), np.float16), 'f64': ramp((2, 1, 3), np.float64),
    'i64': np.arange(-3, 3, dtype=np.int64) * (1 << 40), 'i32': np.arange(-4, 4, dtype=np.int32).reshape(2, 4),
    'i16': np.arange(-2, 2, dtype=np.int16), 'i8': np.arange(-2, 2, dtype=np.int8),
    'u8': np.arange(250, 256, dtype=np.uint8), 'b': np.array([True, False]),
    'scalar': np.array(1.5, dtype=np.float64), 't': ramp((4, 3), np.float32).T,
}
assert sorted(t) == sorted(want), sorted(t)
for k, v in want.items():
    assert t[k].dtype == v.dtype and t[k].shape == v.shape and np.array_equal(t[k], v), (k, t[k], v)
with safe_open(p, framework='np') as f:
    assert f.metadata() == {'format': 'pt', 'who': 'meshtrain'}, f.metadata()
print('PYTHON-OK', len(t))
)";
  std::string out;
  EXPECT_EQ(run_python(dir_, script, out), 0) << out;
  EXPECT_THAT(out, HasSubstr("PYTHON-OK 11"));
}

TEST_F(SafetensorsTest, WeReadPythonFiles) {
  const fs::path path = dir_ / "py.safetensors";
  const std::string script = R"(
import numpy as np
from safetensors.numpy import save_file
save_file({
    'a.f32': (np.arange(12, dtype=np.float32) * 0.5 - 2).reshape(3, 4),
    'b.f16': np.array([1.5, -2.25, 65504], dtype=np.float16),
    'c.i64': np.array([[-(1 << 50), 7]], dtype=np.int64),
    'd.u8': np.arange(5, dtype=np.uint8),
    'e.bool': np.array([False, True, True]),
    'f.f64': np.array(3.25),
    'g.i8': np.array([-128, 127], dtype=np.int8),
}, ')" + path.string() + R"(', metadata={'source': 'python'})
print('SAVED')
)";
  std::string out;
  ASSERT_EQ(run_python(dir_, script, out), 0) << out;
  SafetensorsFile file(path);
  EXPECT_EQ(file.metadata().at("source"), "python");
  EXPECT_EQ(file.names(), (std::vector<std::string>{"a.f32", "b.f16", "c.i64", "d.u8", "e.bool",
                                                    "f.f64", "g.i8"}));
  EXPECT_TRUE(at::equal(file.read("a.f32"), (at::arange(12, at::kFloat) * 0.5 - 2).reshape({3, 4})));
  EXPECT_TRUE(at::equal(file.read("b.f16"), at::tensor({1.5, -2.25, 65504.0}).to(at::kHalf)));
  EXPECT_TRUE(
      at::equal(file.read("c.i64"), at::tensor({-(int64_t{1} << 50), int64_t{7}}).reshape({1, 2})));
  EXPECT_TRUE(at::equal(file.read("d.u8"), at::arange(5, at::kByte)));
  EXPECT_TRUE(at::equal(file.read("e.bool"), at::tensor({0, 1, 1}).to(at::kBool)));
  EXPECT_EQ(file.info("f.f64").shape, std::vector<int64_t>{});
  EXPECT_EQ(file.read("f.f64").item<double>(), 3.25);
  EXPECT_TRUE(at::equal(file.read("g.i8"), at::tensor({-128, 127}).to(at::kChar)));
  EXPECT_TRUE(at::equal(file.read_slice("a.f32", 1, 1, 2),
                        ((at::arange(12, at::kFloat) * 0.5 - 2).reshape({3, 4})).narrow(1, 1, 2)));
}

}  // namespace
}  // namespace meshtrain::io

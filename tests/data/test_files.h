// Test helpers for tests/data: a fresh temporary directory per test and writers for the token
// file formats (.npy, llm.c .bin), built byte by byte so tests control every header field.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "util/check.h"

namespace meshtrain::data::testing {

// A directory that exists for the lifetime of the object and is removed with its contents.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            ("meshtrain_data_" + std::to_string(::getpid()) + "_" +
             std::to_string(counter++) + "_" + (info ? info->name() : "x"));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

inline std::filesystem::path write_bytes(const std::filesystem::path& path,
                                         const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  MT_CHECK(out, "test helper cannot write ", path);
  return path;
}

// Little-endian bytes of the low `width` bytes of each value.
inline std::string le_bytes(const std::vector<int64_t>& values, int width) {
  std::string out;
  for (int64_t v : values) {
    const auto u = static_cast<uint64_t>(v);
    for (int b = 0; b < width; ++b) out.push_back(static_cast<char>((u >> (8 * b)) & 0xff));
  }
  return out;
}

// A .npy file: the given header dict text (padded with spaces and '\n' to a multiple of 64, as
// numpy does), in format `major`.0, followed by `data`.
inline std::string npy_bytes(const std::string& dict, const std::string& data, int major = 1) {
  const size_t prefix = major == 1 ? 10 : 12;
  std::string header = dict;
  while ((prefix + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  std::string out = "\x93NUMPY";
  out.push_back(static_cast<char>(major));
  out.push_back('\0');
  out += le_bytes({static_cast<int64_t>(header.size())}, major == 1 ? 2 : 4);
  return out + header + data;
}

inline std::string npy_dict(const std::string& descr, const std::string& shape,
                            bool fortran = false) {
  return "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") +
         ", 'shape': " + shape + ", }";
}

// A 1-D npy of `values` stored as dtype `descr` (e.g. "<u2").
inline std::string npy_of(const std::string& descr, const std::vector<int64_t>& values,
                          int major = 1) {
  const int width = descr.back() - '0';
  std::string shape = "(";  // built with += : GCC 12 misfires -Wstringop-overflow on "(" + s
  shape += std::to_string(values.size());
  shape += ",)";
  return npy_bytes(npy_dict(descr, shape), le_bytes(values, width), major);
}

// An llm.c .bin shard: header [magic, version, count, 0...] then the tokens.
inline std::string llmc_bin(int32_t magic, int32_t version, int32_t count,
                            const std::vector<int64_t>& tokens, int width) {
  std::vector<int64_t> header(256, 0);
  header[0] = magic;
  header[1] = version;
  header[2] = count;
  return le_bytes(header, 4) + le_bytes(tokens, width);
}

inline std::vector<int64_t> to_vector(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

// Runs `fn`, expecting a meshtrain::Error whose message contains every one of `phrases`.
template <typename Fn>
void expect_error(Fn&& fn, const std::vector<std::string>& phrases) {
  try {
    fn();
    ADD_FAILURE() << "expected a meshtrain::Error";
  } catch (const meshtrain::Error& e) {
    const std::string msg = e.what();
    for (const auto& p : phrases) {
      EXPECT_NE(msg.find(p), std::string::npos) << "message lacks '" << p << "': " << msg;
    }
  }
}

}  // namespace meshtrain::data::testing

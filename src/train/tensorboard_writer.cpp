#include "train/tensorboard_writer.h"

#include <unistd.h>

#include <bit>
#include <chrono>
#include <climits>
#include <ctime>

#include "util/check.h"
#include "util/crc32c.h"

namespace meshtrain::train {

namespace fs = std::filesystem;

namespace {

// Protocol-buffer wire format, just what Event needs: varints, fixed 32/64-bit little-endian
// numbers and length-delimited fields.
enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kBytes = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
}

void put_key(std::string& out, uint32_t field, WireType type) { put_varint(out, (field << 3) | type); }

void put_bytes(std::string& out, uint32_t field, std::string_view bytes) {
  put_key(out, field, kBytes);
  put_varint(out, bytes.size());
  out += bytes;
}

void put_double(std::string& out, uint32_t field, double v) {
  put_key(out, field, kFixed64);
  put_le(out, std::bit_cast<uint64_t>(v), 8);
}

void put_float(std::string& out, uint32_t field, float v) {
  put_key(out, field, kFixed32);
  put_le(out, std::bit_cast<uint32_t>(v), 4);
}

void put_int64(std::string& out, uint32_t field, int64_t v) {
  put_key(out, field, kVarint);
  put_varint(out, static_cast<uint64_t>(v));  // negative int64 take ten bytes, as protobuf writes them
}

// tensorflow.Event's fields (tensorflow/core/util/event.proto) and those of its parts.
constexpr uint32_t kEventWallTime = 1, kEventStep = 2, kEventFileVersion = 3, kEventSummary = 5,
                   kEventSessionLog = 7;
constexpr uint32_t kSummaryValue = 1, kValueTag = 1, kValueSimpleValue = 2;
constexpr uint32_t kSessionLogStatus = 1, kSessionLogStart = 1;

uint32_t masked_crc(std::string_view bytes) {
  const uint32_t crc = util::crc32c(bytes);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string host_name() {
  char name[HOST_NAME_MAX + 1] = {};
  if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

fs::path fresh_event_file(const fs::path& dir) {
  const std::string base = "events.out.tfevents." + std::to_string(std::time(nullptr)) + "." + host_name();
  fs::path path = dir / base;
  for (int n = 1; fs::exists(path); ++n) path = dir / (base + "." + std::to_string(n));
  return path;
}

}  // namespace

std::string tfrecord(std::string_view data) {
  std::string length;
  put_le(length, data.size(), 8);
  std::string out = length;
  put_le(out, masked_crc(length), 4);
  out += data;
  put_le(out, masked_crc(data), 4);
  return out;
}

TensorBoardWriter::TensorBoardWriter(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  MT_CHECK(!ec, "cannot create the TensorBoard directory ", dir, ": ", ec.message());
  path_ = fresh_event_file(dir);
  out_ = util::AppendFile(path_);
  std::string version;
  put_bytes(version, kEventFileVersion, "brain.Event:2");
  add_event(version);
}

void TensorBoardWriter::add_scalars(int64_t step, const std::vector<std::pair<std::string, double>>& scalars) {
  std::string summary;
  for (const auto& [tag, value] : scalars) {
    std::string v;
    put_bytes(v, kValueTag, tag);
    put_float(v, kValueSimpleValue, static_cast<float>(value));
    put_bytes(summary, kSummaryValue, v);
  }
  std::string fields;
  put_int64(fields, kEventStep, step);
  put_bytes(fields, kEventSummary, summary);
  add_event(fields);
}

void TensorBoardWriter::add_session_start(int64_t step) {
  std::string session_log;
  put_key(session_log, kSessionLogStatus, kVarint);
  put_varint(session_log, kSessionLogStart);
  std::string fields;
  put_int64(fields, kEventStep, step);
  put_bytes(fields, kEventSessionLog, session_log);
  add_event(fields);
}

void TensorBoardWriter::add_event(std::string_view fields) {
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::string event;
  put_double(event, kEventWallTime, now);
  event += fields;
  out_.append(tfrecord(event));
}

}  // namespace meshtrain::train

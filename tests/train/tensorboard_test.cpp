// TensorBoard output: the tags a metrics record maps to (every number, nested ones included), the
// event file's TFRecord framing and Event encoding read back by a small protobuf decoder, and the
// report_to / logging_dir arguments.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <bit>
#include <cstring>
#include <filesystem>
#include <map>

#include "train/tensorboard_scalars.h"
#include "train/tensorboard_writer.h"
#include "train/training_arguments.h"
#include "util/check.h"
#include "util/crc32c.h"
#include "util/files.h"

using namespace meshtrain;
namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

namespace {

using Tags = std::map<std::string, double>;

Tags as_map(const std::vector<std::pair<std::string, double>>& scalars) {
  Tags out;
  for (auto& [tag, value] : scalars) EXPECT_TRUE(out.emplace(tag, value).second) << "tag twice: " << tag;
  return out;
}

// A protobuf message as field number -> the raw values of that field, in order (varints and
// fixed numbers as their bits, length-delimited fields as bytes).
struct Message {
  std::multimap<uint32_t, uint64_t> numbers;
  std::multimap<uint32_t, std::string> bytes;
};

uint64_t read_varint(std::string_view& s) {
  uint64_t v = 0;
  for (int shift = 0;; shift += 7) {
    if (s.empty()) throw std::runtime_error("truncated varint");
    const auto b = static_cast<uint8_t>(s[0]);
    s.remove_prefix(1);
    v |= uint64_t(b & 0x7F) << shift;
    if (!(b & 0x80)) return v;
  }
}

uint64_t read_le(std::string_view& s, int n) {
  if (s.size() < size_t(n)) throw std::runtime_error("truncated fixed field");
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= uint64_t(static_cast<uint8_t>(s[i])) << (8 * i);
  s.remove_prefix(n);
  return v;
}

Message decode(std::string_view s) {
  Message m;
  while (!s.empty()) {
    const uint64_t key = read_varint(s);
    const auto field = static_cast<uint32_t>(key >> 3);
    switch (key & 7) {
      case 0: m.numbers.emplace(field, read_varint(s)); break;
      case 1: m.numbers.emplace(field, read_le(s, 8)); break;
      case 5: m.numbers.emplace(field, read_le(s, 4)); break;
      case 2: {
        const uint64_t n = read_varint(s);
        if (s.size() < n) throw std::runtime_error("truncated bytes field");
        m.bytes.emplace(field, std::string(s.substr(0, n)));
        s.remove_prefix(n);
        break;
      }
      default: throw std::runtime_error("unexpected wire type");
    }
  }
  return m;
}

uint32_t masked(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

// The records of a TFRecord file, each frame's checksums verified.
std::vector<std::string> read_records(const fs::path& path) {
  const std::string file = util::read_file(path);
  std::string_view s = file;
  std::vector<std::string> out;
  while (!s.empty()) {
    const std::string_view length_bytes = s.substr(0, 8);
    const uint64_t length = read_le(s, 8);
    EXPECT_EQ(read_le(s, 4), masked(util::crc32c(length_bytes)));
    const std::string data(s.substr(0, length));
    s.remove_prefix(length);
    EXPECT_EQ(read_le(s, 4), masked(util::crc32c(data)));
    out.push_back(data);
  }
  return out;
}

}  // namespace

TEST(TensorBoardScalars, EveryNumberOfARecordGetsHfTags) {
  auto record = nlohmann::json::parse(R"({
      "step": 20, "loss": 2.5, "grad_norm": 0.75, "lr": 0.001, "tokens": 81920, "tokens_per_s": 1234.5,
      "mfu": 0.125, "peak_memory_mib": 812.0, "aux_loss": 2.0625, "dropped_tokens": 3,
      "tokens_per_expert": [[10, 20, 30], [40, 50, 60]],
      "bytes_sent_per_step": {"dp_shard": 4096, "tp": 512},
      "eval_loss": 2.75, "eval_ppl": 15.6, "note": "text", "finite": true, "nothing": null,
      "future": {"a": [1, 2], "b": 3}})");
  const Tags want = {{"train/loss", 2.5},
                     {"train/grad_norm", 0.75},
                     {"train/learning_rate", 0.001},
                     {"train/tokens", 81920},
                     {"train/tokens_per_s", 1234.5},
                     {"train/mfu", 0.125},
                     {"train/peak_memory_mib", 812.0},
                     {"train/aux_loss", 2.0625},
                     {"train/dropped_tokens", 3},
                     {"moe/layer_0/expert_0", 10},
                     {"moe/layer_0/expert_1", 20},
                     {"moe/layer_0/expert_2", 30},
                     {"moe/layer_1/expert_0", 40},
                     {"moe/layer_1/expert_1", 50},
                     {"moe/layer_1/expert_2", 60},
                     {"comm/dp_shard_bytes_per_step", 4096},
                     {"comm/tp_bytes_per_step", 512},
                     {"eval/loss", 2.75},
                     {"eval/ppl", 15.6},
                     {"train/future/a/0", 1},
                     {"train/future/a/1", 2},
                     {"train/future/b", 3}};
  EXPECT_EQ(as_map(train::tensorboard_scalars(record)), want);
}

TEST(TensorBoardScalars, EvalAndTestRecordsHaveTheirOwnSections) {
  auto record = nlohmann::json::parse(R"({"step": 5, "eval_loss": 3.0, "eval_ppl": 20.0, "test_loss": 3.5})");
  EXPECT_EQ(as_map(train::tensorboard_scalars(record)),
            (Tags{{"eval/loss", 3.0}, {"eval/ppl", 20.0}, {"test/loss", 3.5}}));
}

TEST(TensorBoardWriter, WritesFramedEventsAFreshFileEachRunStart) {
  util::TempDir tmp("mt_tb");
  const fs::path dir = fs::path(tmp.path()) / "runs";
  fs::path first, second;
  {
    train::TensorBoardWriter writer(dir);
    first = writer.path();
    writer.add_scalars(7, {{"train/loss", 1.5}, {"train/learning_rate", 0.1}});
    // Visible before the writer goes: a crashed run keeps what it logged.
    EXPECT_EQ(read_records(first).size(), 2u);
    writer.add_session_start(-3);
  }
  {
    train::TensorBoardWriter writer(dir);  // usually within the same second: a new name all the same
    second = writer.path();
  }
  EXPECT_NE(first, second);
  EXPECT_TRUE(first.filename().string().starts_with("events.out.tfevents.")) << first;
  EXPECT_LT(first.filename().string(), second.filename().string());  // readers go by name order

  const auto records = read_records(first);
  ASSERT_EQ(records.size(), 3u);
  const auto version = decode(records[0]);
  EXPECT_EQ(version.bytes.find(3)->second, "brain.Event:2");
  EXPECT_EQ(version.numbers.count(1), 1u);  // wall_time

  const auto scalars = decode(records[1]);
  EXPECT_EQ(scalars.numbers.find(2)->second, 7u);
  const double wall_time = std::bit_cast<double>(scalars.numbers.find(1)->second);
  EXPECT_GT(wall_time, 1.6e9);
  const auto summary = decode(scalars.bytes.find(5)->second);
  ASSERT_EQ(summary.bytes.count(1), 2u);
  std::map<std::string, float> values;
  for (auto [it, end] = summary.bytes.equal_range(1); it != end; ++it) {
    const auto value = decode(it->second);
    values[value.bytes.find(1)->second] = std::bit_cast<float>(uint32_t(value.numbers.find(2)->second));
  }
  EXPECT_EQ(values, (std::map<std::string, float>{{"train/loss", 1.5f}, {"train/learning_rate", 0.1f}}));

  const auto session = decode(records[2]);
  EXPECT_EQ(static_cast<int64_t>(session.numbers.find(2)->second), -3);  // two's complement, as protobuf
  EXPECT_EQ(decode(session.bytes.find(7)->second).numbers.find(1)->second, 1u);  // SessionLog.START
  EXPECT_EQ(read_records(second).size(), 1u);
}

TEST(TensorBoardArguments, ReportToIsCheckedAndLoggingDirDefaultsUnderOutputDir) {
  train::TrainingArguments args;
  EXPECT_FALSE(args.reports_to_tensorboard());  // transformers 5's default: none
  args.output_dir = "out";
  EXPECT_EQ(args.tensorboard_dir(), "out/runs");
  args.set("report_to", "tensorboard");
  EXPECT_TRUE(args.reports_to_tensorboard());
  args.set("report_to", "all");
  EXPECT_TRUE(args.reports_to_tensorboard());
  EXPECT_EQ(args.to_json()["report_to"], "all");
  args.set("report_to", "none");
  EXPECT_FALSE(args.reports_to_tensorboard());
  args.set("logging_dir", "tb");
  EXPECT_EQ(args.tensorboard_dir(), "tb");
  EXPECT_THAT([&] { args.set("report_to", "wandb"); },
              ThrowsMessage<UsageError>(HasSubstr("--report_to must be one of tensorboard, none, all; got 'wandb'")));
}

// Tests for io/hf_checkpoint: single-file and sharded saves read back exactly, greedy shard
// layout and index contents, stale-file cleanup on re-save, and indexes that point outside the
// directory, at missing files, or at files without the tensor.
#include "io/hf_checkpoint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "util/check.h"
#include "util/files.h"

namespace meshtrain::io {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using Tensors = std::vector<std::pair<std::string, at::Tensor>>;

class HfCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    root_ = fs::temp_directory_path() / ("meshtrain_ckpt_" + std::string(test->name()) + "_" +
                                         std::to_string(::getpid()) + "_" +
                                         std::to_string(counter++));
    fs::remove_all(root_);
    dir_ = root_ / "ckpt";
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(root_); }

  // The files in dir_, sorted.
  std::vector<std::string> listing() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

  void write_index(const nlohmann::json& weight_map) const {
    const nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
    std::ofstream(dir_ / "model.safetensors.index.json") << index.dump(2);
  }

  std::string open_error() const {
    try {
      CheckpointReader reader(dir_);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

  fs::path root_, dir_;
};

// Tensors of 400, 400, 400 (non-contiguous), 2000, 20 (BF16) and 40 (F64) bytes.
Tensors model_tensors() {
  return {{"model.embed_tokens.weight", at::randn({10, 10})},
          {"model.layers.0.self_attn.q_proj.weight", at::randn({10, 10})},
          {"model.layers.0.mlp.up_proj.weight", at::randn({10, 10}).t()},
          {"lm_head.weight", at::randn({50, 10})},
          {"model.norm.weight", at::randn({10}).to(at::kBFloat16)},
          {"model.norm.bias", at::randn({5}).to(at::kDouble)}};
}

void expect_same(const CheckpointReader& reader, const Tensors& tensors) {
  std::vector<std::string> names;
  for (const auto& [name, t] : tensors) {
    names.push_back(name);
    ASSERT_TRUE(reader.contains(name)) << name;
    EXPECT_TRUE(at::equal(reader.read(name), t)) << name;
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(reader.names(), names);
}

TEST_F(HfCheckpointTest, SingleFileRoundTrip) {
  const Tensors tensors = model_tensors();
  save_checkpoint_tensors(dir_, tensors);
  EXPECT_EQ(listing(), std::vector<std::string>{"model.safetensors"});
  CheckpointReader reader(dir_);
  expect_same(reader, tensors);
  EXPECT_EQ(reader.bytes_read(), 400u * 3 + 2000 + 20 + 40);
  EXPECT_EQ(reader.info("lm_head.weight").shape, (std::vector<int64_t>{50, 10}));
  EXPECT_TRUE(at::equal(reader.read_slice("lm_head.weight", 1, 2, 3),
                        tensors[3].second.narrow(1, 2, 3)));
  try {
    reader.read("missing.weight");
    FAIL() << "no error for a missing tensor";
  } catch (const Error& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("no tensor \"missing.weight\" in checkpoint"));
  }
  // A limit everything fits in still gives one file.
  save_checkpoint_tensors(dir_, tensors, 100000);
  EXPECT_EQ(listing(), std::vector<std::string>{"model.safetensors"});
}

TEST_F(HfCheckpointTest, ShardedRoundTripAndIndex) {
  const Tensors tensors = model_tensors();
  const fs::path fresh = dir_ / "new" / "deeper";  // created on save
  save_checkpoint_tensors(fresh, tensors, 1000);
  // Greedy in order: [400, 400] | [400] (would make 1200) | [2000] alone | [20, 40].
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(fresh)) files.push_back(e.path().filename().string());
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, (std::vector<std::string>{
                       "model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors",
                       "model-00003-of-00004.safetensors", "model-00004-of-00004.safetensors",
                       "model.safetensors.index.json"}));
  const auto index =
      nlohmann::json::parse(util::read_file(fresh / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), 400u * 3 + 2000 + 20 + 40);
  EXPECT_EQ(index["weight_map"].size(), tensors.size());
  EXPECT_EQ(index["weight_map"]["model.embed_tokens.weight"], "model-00001-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"]["model.layers.0.self_attn.q_proj.weight"],
            "model-00001-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"]["model.layers.0.mlp.up_proj.weight"],
            "model-00002-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"]["lm_head.weight"], "model-00003-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"]["model.norm.bias"], "model-00004-of-00004.safetensors");
  EXPECT_THAT(util::read_file(fresh / "model.safetensors.index.json"),
              HasSubstr("\n  \"metadata\": {\n    \"total_size\": 3260\n  },"));

  CheckpointReader reader(fresh);
  expect_same(reader, tensors);
  const uint64_t before = reader.bytes_read();
  EXPECT_TRUE(at::equal(reader.read_slice("lm_head.weight", 0, 10, 5),
                        tensors[3].second.narrow(0, 10, 5)));
  EXPECT_EQ(reader.bytes_read() - before, 5u * 10 * 4);
}

TEST_F(HfCheckpointTest, ResaveRemovesStaleFiles) {
  const Tensors tensors = model_tensors();
  std::ofstream(dir_ / "config.json") << "{}";
  std::ofstream(dir_ / "model-00009-of-00009.safetensors") << "junk from elsewhere";
  save_checkpoint_tensors(dir_, tensors, 1000);  // 4 shards
  EXPECT_FALSE(fs::exists(dir_ / "model-00009-of-00009.safetensors"));
  EXPECT_EQ(listing().size(), 6u);

  save_checkpoint_tensors(dir_, tensors, 2500);  // [400, 400, 400] | [2000, 20, 40]
  EXPECT_EQ(listing(), (std::vector<std::string>{
                           "config.json", "model-00001-of-00002.safetensors",
                           "model-00002-of-00002.safetensors", "model.safetensors.index.json"}));
  expect_same(CheckpointReader(dir_), tensors);

  save_checkpoint_tensors(dir_, tensors);  // back to one file: shards and index go
  EXPECT_EQ(listing(), (std::vector<std::string>{"config.json", "model.safetensors"}));
  expect_same(CheckpointReader(dir_), tensors);

  save_checkpoint_tensors(dir_, tensors, 1000);  // and to shards again: model.safetensors goes
  EXPECT_FALSE(fs::exists(dir_ / "model.safetensors"));
  expect_same(CheckpointReader(dir_), tensors);
}

TEST_F(HfCheckpointTest, SaveRejectsBadInput) {
  try {
    save_checkpoint_tensors(dir_, {{"a", at::ones({4})}, {"b", at::ones({4})}, {"a", at::ones({4})}},
                            8);
    FAIL() << "no error for a duplicate name";
  } catch (const Error& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("\"a\" appears twice"));
  }
  EXPECT_TRUE(listing().empty());

  std::ofstream(dir_ / "file") << "x";
  try {
    save_checkpoint_tensors(dir_ / "file", {{"a", at::ones({4})}});
    FAIL() << "no error for a directory that is a file";
  } catch (const Error& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("cannot create checkpoint directory"));
  }
}

TEST_F(HfCheckpointTest, EmptyDirectoryIsAnError) {
  EXPECT_THAT(open_error(), HasSubstr("no model.safetensors or model.safetensors.index.json in"));
  EXPECT_THAT(open_error(), HasSubstr(dir_.string()));
  fs::remove_all(dir_);
  EXPECT_THAT(open_error(), HasSubstr("does not exist"));
}

TEST_F(HfCheckpointTest, IndexMayNotLeaveTheDirectory) {
  save_safetensors(root_ / "evil.safetensors", {{"w", at::ones({2})}});
  save_safetensors(dir_ / "good.safetensors", {{"w", at::ones({2})}, {"v", at::zeros({1})}});

  write_index({{"w", "../evil.safetensors"}});
  EXPECT_THAT(open_error(), HasSubstr("\"../evil.safetensors\" contains \"..\""));

  write_index({{"w", "/etc/passwd"}});
  EXPECT_THAT(open_error(), HasSubstr("absolute path \"/etc/passwd\""));

  write_index({{"w", (root_ / "evil.safetensors").string()}});
  EXPECT_THAT(open_error(), HasSubstr("absolute path"));

  fs::create_symlink(root_ / "evil.safetensors", dir_ / "link.safetensors");
  write_index({{"w", "link.safetensors"}});
  EXPECT_THAT(open_error(), HasSubstr("outside the checkpoint directory"));

  fs::create_directory_symlink(root_, dir_ / "up");
  write_index({{"w", "up/evil.safetensors"}});
  EXPECT_THAT(open_error(), HasSubstr("outside the checkpoint directory"));

  write_index({{"w", "missing.safetensors"}});
  EXPECT_THAT(open_error(), HasSubstr("\"missing.safetensors\" does not exist"));

  write_index({{"w", "good.safetensors"}, {"gone", "good.safetensors"}});
  EXPECT_THAT(open_error(),
              HasSubstr("maps tensor \"gone\" to \"good.safetensors\", but"));

  write_index({{"w", 3}});
  EXPECT_THAT(open_error(), HasSubstr("weight_map entry \"w\" is 3"));

  std::ofstream(dir_ / "model.safetensors.index.json") << "{\"weight_map\": ";
  EXPECT_THAT(open_error(), HasSubstr("model.safetensors.index.json\" is not valid JSON"));

  std::ofstream(dir_ / "model.safetensors.index.json") << "{\"metadata\": {}}";
  EXPECT_THAT(open_error(), HasSubstr("has no \"weight_map\""));

  // Inside the directory, a symlink or a subdirectory is fine; each file is opened once.
  fs::create_directory(dir_ / "sub");
  save_safetensors(dir_ / "sub" / "s.safetensors", {{"s", at::full({3}, 7.0)}});
  fs::create_symlink("good.safetensors", dir_ / "alias.safetensors");
  write_index({{"w", "good.safetensors"}, {"v", "alias.safetensors"}, {"s", "sub/s.safetensors"}});
  CheckpointReader reader(dir_);
  EXPECT_EQ(reader.names(), (std::vector<std::string>{"s", "v", "w"}));
  EXPECT_TRUE(at::equal(reader.read("s"), at::full({3}, 7.0)));
  EXPECT_TRUE(at::equal(reader.read("v"), at::zeros({1})));
}

}  // namespace
}  // namespace meshtrain::io

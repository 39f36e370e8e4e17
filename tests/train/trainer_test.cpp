// The trainer's pieces against their definitions: token-weighted accumulation, LR schedules,
// decay groups and AdamW steps against transformers and torch (tests/golden/optim), clipping,
// and a resume from checkpoint-N that reproduces the uninterrupted run exactly.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>

#include "data/token_dataset.h"
#include "dist/device_mesh.h"
#include "io/safetensors.h"
#include "models/llama.h"
#include "nn/causal_lm_loss.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/lr_schedule.h"
#include "train/trainer.h"
#include "util/check.h"

using namespace meshtrain;
namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StrEq;
using ::testing::ThrowsMessage;

namespace {

std::filesystem::path golden_dir() { return fs::path(MESHTRAIN_SOURCE_DIR) / "tests/golden/optim"; }

models::LlamaConfig tiny_config() {
  return models::LlamaConfig::load(fs::path(MESHTRAIN_SOURCE_DIR) / "configs/llama-tiny");
}

std::shared_ptr<parallel::ParallelModel> fresh_model(uint64_t seed = 1) {
  auto m = std::make_shared<models::LlamaForCausalLM>(tiny_config());
  m->init_weights(seed);
  return std::make_shared<parallel::ParallelModel>(m, std::make_shared<dist::DeviceMesh>(dist::MeshSizes{}, 0),
                                                   parallel::ParallelOptions{});
}

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("mt_train_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(counter()++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  static int& counter() {
    static int c = 0;
    return c;
  }
};

std::map<std::string, at::Tensor> grads_of(parallel::ParallelModel& m) {
  std::map<std::string, at::Tensor> g;
  for (auto& [name, p] : m.model().named_params()) g[name] = p.grad().clone();
  return g;
}

train::TrainingArguments small_args(const fs::path& out) {
  train::TrainingArguments a;
  a.per_device_train_batch_size = 2;
  a.gradient_accumulation_steps = 2;
  a.learning_rate = 1e-2;
  a.weight_decay = 0.1;
  a.max_steps = 6;
  a.warmup_steps = 2;
  a.lr_scheduler_type = train::LrSchedulerType::Cosine;
  a.logging_steps = 1;
  a.save_steps = 3;
  a.output_dir = out.string();
  return a;
}

}  // namespace

TEST(Accumulation, GradientIsTheTokenWeightedMeanOverTheWholeStep) {
  at::manual_seed(0);
  auto ids = at::randint(0, 256, {2, 16});
  auto targets = nn::shift_labels(ids);
  targets[0].slice(0, 0, 12).fill_(nn::kIgnoreIndex);  // row 0 keeps 3 targets, row 1 keeps 15

  using parallel::Pass;
  auto whole = fresh_model();
  auto step = parallel::step_loss(*whole, {{ids, targets}}, Pass::ForwardBackward);
  EXPECT_EQ(step.targets, 18);
  const double loss_whole = step.mean();
  auto split = fresh_model();
  const double loss_split =
      parallel::step_loss(*split, {{ids.slice(0, 0, 1), targets.slice(0, 0, 1)}, {ids.slice(0, 1, 2), targets.slice(0, 1, 2)}},
                          Pass::ForwardBackward)
          .mean();
  EXPECT_NEAR(loss_split, loss_whole, 1e-6);
  auto gw = grads_of(*whole), gs = grads_of(*split);
  for (auto& [name, g] : gw) EXPECT_TRUE(at::allclose(gs[name], g, 1e-5, 1e-7)) << name;

  // A mean of per-micro-batch means would weigh row 0's 3 targets like row 1's 15.
  auto m0 = fresh_model();
  const double mean0 = parallel::step_loss(*m0, {{ids.slice(0, 0, 1), targets.slice(0, 0, 1)}}, Pass::Forward).mean();
  const double mean1 = parallel::step_loss(*m0, {{ids.slice(0, 1, 2), targets.slice(0, 1, 2)}}, Pass::Forward).mean();
  EXPECT_GT(std::abs((mean0 + mean1) / 2 - loss_whole), 1e-4);
  EXPECT_NEAR((3 * mean0 + 15 * mean1) / 18, loss_whole, 1e-6);
}

TEST(LrSchedule, MatchesTransformersGetScheduler) {
  // Every type at warmup 0, warmup inside the run and warmup = max_steps (scripts/make_golden_optim.py).
  std::ifstream in(golden_dir() / "schedules.json");
  auto cases = nlohmann::json::parse(in);
  ASSERT_EQ(cases.size(), 12u);
  for (auto& c : cases) {
    train::TrainingArguments a;
    a.set("lr_scheduler_type", c["type"].get<std::string>());
    const auto want = c["multipliers"].get<std::vector<double>>();
    ASSERT_EQ(want.size(), c["total"].get<size_t>() + 1);
    for (size_t s = 0; s < want.size(); ++s)
      EXPECT_NEAR(train::lr_multiplier(a.lr_scheduler_type, static_cast<int64_t>(s), c["warmup"], c["total"]), want[s],
                  1e-12)
          << c["type"] << " warmup " << c["warmup"] << " total " << c["total"] << " step " << s;
  }
}

TEST(GradClip, ScalesToMaxNormAndReportsTheNormBefore) {
  auto m = fresh_model();
  auto params = m->model().named_params();
  for (auto& [name, p] : params) p.mutable_grad() = at::zeros_like(p);
  params[0].second.mutable_grad()[0][0] = 3.0f;
  params[1].second.mutable_grad()[0][0] = 4.0f;
  EXPECT_NEAR(m->clip_grad_norm(1.0), 5.0, 1e-6);
  EXPECT_NEAR(params[0].second.grad()[0][0].item<double>(), 0.6, 1e-5);
  EXPECT_NEAR(m->clip_grad_norm(10.0), 1.0, 1e-5);  // under the limit: unchanged
  EXPECT_NEAR(params[1].second.grad()[0][0].item<double>(), 0.8, 1e-5);
}

TEST(AdamW, DecaysWhatHfTrainerDecays) {
  // Every parameter of a Llama with biases and of a Qwen3-MoE, grouped by transformers' Trainer.
  std::ifstream in(golden_dir() / "decay.json");
  auto models = nlohmann::json::parse(in);
  ASSERT_EQ(models.size(), 2u);
  for (auto& [model, params] : models.items()) {
    EXPECT_GT(params.size(), 20u) << model;
    for (auto& [name, decays] : params.items()) EXPECT_EQ(train::decays(name), decays.get<bool>()) << model << " " << name;
  }
}

TEST(AdamW, StepsMatchTorchWithVaryingGradientsRatesAndGroups) {
  // torch.optim.AdamW over 6 steps: a new gradient and learning rate every step, weight decay on
  // HF's decay group only, and one parameter without a gradient on step 2 (skipped, its own
  // step count not advanced).
  io::SafetensorsFile golden(golden_dir() / "adamw.safetensors");
  auto options = golden.read("options");
  const auto lrs = golden.read("lr");
  std::vector<std::pair<std::string, at::Tensor>> params;
  for (auto& key : golden.names())
    if (key.starts_with("init.")) params.emplace_back(key.substr(5), golden.read(key).clone().requires_grad_());
  ASSERT_EQ(params.size(), 4u);
  train::AdamW opt(params, {options[0].item<double>(), options[1].item<double>(), options[2].item<double>(),
                            options[3].item<double>()});
  int skipped = 0;
  for (int64_t step = 0; step < lrs.size(0); ++step) {
    for (auto& [name, p] : params) {
      const auto key = "grad." + std::to_string(step) + "." + name;
      p.mutable_grad() = golden.contains(key) ? golden.read(key) : at::Tensor();
      skipped += !golden.contains(key);
    }
    opt.step(lrs[step].item<double>());
    for (auto& [name, p] : params) {
      auto want = golden.read("after." + std::to_string(step) + "." + name);
      EXPECT_TRUE(at::allclose(p, want, 1e-5, 1e-7))
          << name << " after step " << step << ": max diff " << (p - want).abs().max().item<double>();
    }
  }
  EXPECT_EQ(skipped, 1);
  EXPECT_EQ(opt.steps_taken(), lrs.size(0));
}

TEST(Trainer, ResumeFromCheckpointReproducesTheUninterruptedRunExactly) {
  TempDir dir;
  auto data = data::open_token_dataset(fs::path(MESHTRAIN_SOURCE_DIR) / "data/corpus.txt");

  auto full_model = fresh_model(3);
  train::Trainer full(full_model, *data, 32, small_args(dir.path / "full"));
  full.verbose = false;
  full.peak_flops = 1e9;
  auto full_records = full.train();
  ASSERT_EQ(full_records.size(), 6u);
  ASSERT_TRUE(fs::exists(dir.path / "full/checkpoint-3/shards-rank00000.safetensors"));
  EXPECT_TRUE(fs::exists(dir.path / "full/model.safetensors"));
  EXPECT_FALSE(fs::exists(dir.path / "full/checkpoint-6"));  // the final model is saved instead

  auto args = small_args(dir.path / "resumed");
  args.resume_from_checkpoint = (dir.path / "full/checkpoint-3").string();
  auto resumed_model = fresh_model(99);  // different init: everything must come from the checkpoint
  train::Trainer resumed(resumed_model, *data, 32, args);
  resumed.verbose = false;
  resumed.peak_flops = 1e9;
  auto resumed_records = resumed.train();
  ASSERT_EQ(resumed_records.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(resumed_records[i].step, full_records[i + 3].step);
    EXPECT_EQ(resumed_records[i].loss, full_records[i + 3].loss) << "step " << resumed_records[i].step;
    EXPECT_EQ(resumed_records[i].lr, full_records[i + 3].lr);
  }
  auto a = full_model->model().named_params(), b = resumed_model->model().named_params();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;

  // metrics.jsonl: one object per logging step with every field.
  std::ifstream metrics(dir.path / "full/metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(metrics, line)) {
    auto j = nlohmann::json::parse(line);
    for (auto key : {"step", "loss", "grad_norm", "lr", "tokens", "tokens_per_s", "mfu"})
      EXPECT_TRUE(j.contains(key)) << key;
    EXPECT_EQ(j["tokens"].get<int64_t>(), j["step"].get<int64_t>() * 4 * 32);
    ++lines;
  }
  EXPECT_EQ(lines, 6);
}

TEST(Checkpoint, LatestIgnoresUnfinishedTemporaryDirectories) {
  TempDir dir;
  auto model = fresh_model();
  train::AdamW opt(model->model().named_params(), {});
  train::save_training_checkpoint(dir.path, *model, opt, {7, 28, nlohmann::json::object()});
  fs::create_directories(dir.path / ".checkpoint-9.tmp");  // a save that crashed midway
  EXPECT_EQ(train::latest_checkpoint(dir.path), dir.path / "checkpoint-7");
  // Saving the same step again replaces it whole.
  train::save_training_checkpoint(dir.path, *model, opt, {7, 30, nlohmann::json::object()});
  auto state = train::load_training_checkpoint(dir.path / "checkpoint-7", *model, opt);
  EXPECT_EQ(state.data_position, 30);
  EXPECT_FALSE(fs::exists(dir.path / ".checkpoint-7.old"));
}

TEST(Checkpoint, ATruncatedCheckpointIsAClearError) {
  TempDir dir;
  auto model = fresh_model();
  train::AdamW opt(model->model().named_params(), {});
  auto ckpt = train::save_training_checkpoint(dir.path, *model, opt, {2, 8, nlohmann::json::object()});
  const auto shards = ckpt / "shards-rank00000.safetensors";
  fs::resize_file(shards, fs::file_size(shards) / 2);
  try {
    train::load_training_checkpoint(ckpt, *model, opt);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("shards-rank00000.safetensors"), std::string::npos) << e.what();
  }
}

TEST(TrainingArguments, FlagsAndJsonAreValidated) {
  train::TrainingArguments a;
  a.update_from_json({{"learning_rate", 0.01}, {"lr_scheduler_type", "cosine"}, {"max_steps", 7}}, "args.json");
  EXPECT_EQ(a.learning_rate, 0.01);
  EXPECT_EQ(a.max_steps, 7);
  EXPECT_EQ(a.lr_scheduler_type, train::LrSchedulerType::Cosine);
  EXPECT_THAT([&] { a.set("max_steps", "ten"); },
              ThrowsMessage<UsageError>(StrEq("--max_steps expects an integer, got 'ten'")));
  EXPECT_THAT([&] { a.set("lr_scheduler_type", "exponential"); },
              ThrowsMessage<UsageError>(HasSubstr("--lr_scheduler_type must be one of linear, cosine, constant, "
                                                  "constant_with_warmup; got 'exponential'")));
  EXPECT_THAT([&] { a.update_from_json({{"learning_rat", 1}}, "args.json"); },
              ThrowsMessage<UsageError>(StrEq("args.json: unknown training argument 'learning_rat'")));
  a.warmup_steps = 8;
  EXPECT_THAT([&] { a.validate(); },
              ThrowsMessage<UsageError>(StrEq("--warmup_steps must be in [0, max_steps=7], got 8")));
  a.warmup_steps = 0;
  a.adam_beta2 = 1.0;
  EXPECT_THAT([&] { a.validate(); }, ThrowsMessage<UsageError>(StrEq("--adam_beta2 must be in [0, 1), got 1")));
  a.adam_beta2 = 0.999;
  auto round_trip = train::TrainingArguments();
  round_trip.update_from_json(a.to_json(), "self");
  EXPECT_EQ(round_trip.to_json(), a.to_json());
}

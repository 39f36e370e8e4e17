// MoE models under pipeline parallelism against one rank. Each stage holds some of the MoE layers
// and its share of the load-balancing loss over all of them: one step's gradients of every
// parameter (the routers' included), the loss, the aux loss and the tokens per expert equal the
// serial step's on 2 and 4 stages, and on 2 stages times expert parallelism in both modes (token
// dispatch over FSDP's ranks, router masking over tp); also for qwen3-moe, whose first stage holds
// only its dense layer. Then training curves: 10 steps within 1e-5 relative (loss, gradient norm,
// aux loss).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <map>
#include <mutex>
#include <set>

#include "data/token_dataset.h"
#include "nn/causal_lm_loss.h"
#include "support/run_ranks.h"
#include "train/trainer.h"

using namespace meshtrain;
using meshtrain::testing::run_ranks;
using meshtrain::testing::sizes;
namespace fs = std::filesystem;

namespace {

models::LlamaConfig moe_config(const std::string& name, int64_t layers) {
  auto j = models::LlamaConfig::load(fs::path(MESHTRAIN_SOURCE_DIR) / "configs" / name).raw;
  j["num_hidden_layers"] = layers;
  return models::LlamaConfig::from_json(j, name + "-" + std::to_string(layers));
}

struct Layout {
  std::string name;
  dist::MeshSizes sizes;
  parallel::ParallelOptions options;
};

Layout layout(const std::string& name, dist::MeshSizes s, int64_t ep = 1,
              parallel::EpMode mode = parallel::EpMode::AllToAll, int64_t pp = 2) {
  s.pp = pp;
  s.ep = ep;
  s.ep_in_tp = ep > 1 && mode == parallel::EpMode::AllReduce;
  parallel::ParallelOptions o;
  o.ep_size = ep;
  o.ep_mode = mode;
  return {name, s, o};
}

// pp 2 alone (1F1B, and GPipe), × FSDP 2 with token-dispatch ep 2, × tp 2 with router-masking ep 2.
std::vector<Layout> layouts() {
  auto gpipe = layout("pp2_gpipe", sizes(1, 1));
  gpipe.options.pp.schedule = parallel::PipelineSchedule::GPipe;
  return {layout("pp2", sizes(1, 1)), gpipe, layout("pp2_fsdp2_ep2_alltoall", sizes(1, 2), 2),
          layout("pp2_tp2_ep2_allreduce", sizes(1, 1, 1, 1, 2), 2, parallel::EpMode::AllReduce)};
}

double relative(const at::Tensor& got, const at::Tensor& want) {
  return ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item<double>();
}

// One step of four micro-batches of two rows; rank d of n token-holding ranks takes row d of
// every micro-batch when n is 2.
void expect_step_parity(const models::LlamaConfig& config, const Layout& l) {
  at::manual_seed(4);
  auto ids = at::randint(0, config.vocab_size, {8, 16});
  auto targets = nn::shift_labels(ids);
  auto micro_batches = [&](int64_t d, int64_t n) {
    std::vector<parallel::MicroBatch> out;
    for (int64_t m = 0; m < 4; ++m) {
      auto rows = at::arange(2 * m + d * (2 / n), 2 * m + (d + 1) * (2 / n), at::kLong);
      out.push_back({ids.index_select(0, rows), targets.index_select(0, rows)});
    }
    return out;
  };
  auto serial = std::make_shared<models::LlamaForCausalLM>(config);
  serial->init_weights(5);
  parallel::ParallelModel solo(serial, std::make_shared<dist::DeviceMesh>(dist::MeshSizes{}, 0), {});
  const auto want = parallel::step_loss(solo, micro_batches(0, 1), parallel::Pass::ForwardBackward);
  ASSERT_TRUE(want.moe);
  std::map<std::string, at::Tensor> grads;
  for (auto& [name, p] : serial->named_params()) grads[name] = p.grad();

  std::mutex mu;
  std::map<std::string, double> worst;  // by parameter, over the ranks holding it
  std::set<std::string> seen;
  run_ranks(l.sizes, [&](std::shared_ptr<dist::DeviceMesh> mesh) {
    auto model = std::make_shared<models::LlamaForCausalLM>(config);
    model->init_weights(5);
    parallel::ParallelModel pm(model, mesh, l.options);
    const int64_t n = mesh->size(MeshDim::Dp);
    const auto got = parallel::step_loss(pm, micro_batches(mesh->coordinate(MeshDim::Dp), n),
                                         parallel::Pass::ForwardBackward);
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_NEAR(got.loss_sum, want.loss_sum, 1e-6 * want.loss_sum) << l.name;
    EXPECT_EQ(got.targets, want.targets) << l.name;
    ASSERT_TRUE(got.moe) << l.name;
    EXPECT_NEAR(got.moe->aux_loss(), want.moe->aux_loss(), 1e-6 * want.moe->aux_loss()) << l.name;
    EXPECT_TRUE(at::equal(got.moe->tokens_per_expert, want.moe->tokens_per_expert))
        << l.name << ": " << got.moe->tokens_per_expert << " vs " << want.moe->tokens_per_expert;
    EXPECT_EQ(got.moe->dropped, want.moe->dropped) << l.name;
    for (auto& [name, p] : model->named_params()) {
      ASSERT_TRUE(p.grad().defined()) << l.name << " " << name;
      auto expected = model->placement(name).local_of(grads.at(name), p.sizes());
      worst[name] = std::max(worst[name], relative(p.grad(), expected));
      seen.insert(name);
    }
  });
  EXPECT_EQ(seen.size(), grads.size()) << l.name << ": the stages together hold every parameter";
  double most = 0.0;
  for (auto& [name, rel] : worst) {
    EXPECT_LT(rel, 1e-5) << l.name << " " << name;
    most = std::max(most, rel);
  }
  std::printf("%s %s: gradients within %.1e relative\n", config.model_type.c_str(), l.name.c_str(), most);
}

}  // namespace

TEST(PipelineMoeParity, OneStepHasTheSerialGradientsWithTheAuxLossOnEveryStage) {
  const auto mixtral = moe_config("mixtral-tiny", 4);
  for (auto& l : layouts()) expect_step_parity(mixtral, l);
  expect_step_parity(mixtral, layout("pp4", sizes(1, 1), 1, parallel::EpMode::AllToAll, 4));  // a layer each
  // Layer 0 is dense: the first stage routes nothing but still takes part in the sums.
  expect_step_parity(moe_config("qwen3-moe-tiny", 2), layout("pp2", sizes(1, 1)));
}

namespace {

struct Run {
  std::vector<double> losses, grad_norms, aux_losses;
};

Run train_run(const models::LlamaConfig& config, const Layout& l, int64_t accum) {
  static auto data = data::open_token_dataset(fs::path(MESHTRAIN_SOURCE_DIR) / "data/corpus.txt");
  data->max_token();  // cached before the ranks share the dataset
  const auto dir = fs::temp_directory_path() / ("mt_pp_moe_" + std::to_string(::getpid()) + "_" + l.name);
  Run run;
  run_ranks(l.sizes, [&](std::shared_ptr<dist::DeviceMesh> mesh) {
    auto model = std::make_shared<models::LlamaForCausalLM>(config);
    model->init_weights(5);
    auto pm = std::make_shared<parallel::ParallelModel>(model, mesh, l.options);
    train::TrainingArguments args;
    args.per_device_train_batch_size = 8 / accum / mesh->size(MeshDim::Dp);
    args.gradient_accumulation_steps = accum;
    args.learning_rate = 3e-3;
    args.max_steps = 10;
    args.warmup_steps = 3;
    args.logging_steps = 10;
    args.save_steps = 0;
    args.output_dir = dir.string();
    train::Trainer trainer(pm, *data, 32, args);
    trainer.verbose = false;
    trainer.peak_flops = 1e9;
    auto records = trainer.train();
    if (mesh->rank() != 0) return;
    for (auto& r : records) {
      run.losses.push_back(r.loss);
      run.grad_norms.push_back(r.grad_norm);
      run.aux_losses.push_back(r.moe ? r.moe->aux_loss() : 0.0);
    }
  });
  fs::remove_all(dir);
  return run;
}

}  // namespace

TEST(PipelineMoeParity, TrainingCurvesEqualOneRank) {
  const auto config = moe_config("mixtral-tiny", 4);
  const auto ref = train_run(config, {"single", sizes(1, 1), {}}, 2);
  ASSERT_EQ(ref.losses.size(), 10u);
  EXPECT_LT(ref.losses.back(), ref.losses.front() - 0.3);  // it trained
  for (auto& l : layouts()) {
    const auto run = train_run(config, l, 2);
    ASSERT_EQ(run.losses.size(), ref.losses.size()) << l.name;
    double worst = 0.0;
    for (size_t s = 0; s < ref.losses.size(); ++s) {
      EXPECT_NEAR(run.losses[s], ref.losses[s], 1e-5 * ref.losses[s]) << l.name << " step " << s + 1;
      EXPECT_NEAR(run.grad_norms[s], ref.grad_norms[s], 1e-5 * ref.grad_norms[s]) << l.name << " step " << s + 1;
      EXPECT_NEAR(run.aux_losses[s], ref.aux_losses[s], 1e-5 * ref.aux_losses[s]) << l.name << " step " << s + 1;
      for (double rel : {run.losses[s] / ref.losses[s], run.grad_norms[s] / ref.grad_norms[s],
                         run.aux_losses[s] / ref.aux_losses[s]})
        worst = std::max(worst, std::abs(rel - 1));
    }
    ::testing::Test::RecordProperty(l.name, std::to_string(worst));
    std::printf("%s: loss, grad_norm and aux loss within %.1e relative over 10 steps\n", l.name.c_str(), worst);
  }
}

// The LayerRunner chain: a runner wraps those installed before it, each runs the rest of the
// chain (the layer last), and removing one leaves the others in place.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "nn/layer_runner.h"

using namespace meshtrain;

namespace {

// Logs its entry and exit and adds `shift` to the hidden state on the way in.
struct LoggingRunner : nn::LayerRunner {
  LoggingRunner(std::string name, double shift, std::vector<std::string>& log) : name(std::move(name)), shift(shift), log(log) {}
  nn::LayerOutput run(int64_t index, const nn::LayerForward& inner, const at::Tensor& hidden) override {
    log.push_back(name + " enters layer " + std::to_string(index));
    auto out = inner(hidden + shift);
    log.push_back(name + " leaves");
    return out;
  }
  std::string name;
  double shift;
  std::vector<std::string>& log;
};

}  // namespace

TEST(LayerRunnerChain, TwoRunnersWrapTheLayerOutermostLast) {
  std::vector<std::string> log;
  nn::LayerRunnerChain chain;
  auto layer = [&](const at::Tensor& x) {
    log.push_back("layer");
    return nn::LayerOutput{x * 10, std::nullopt};
  };
  EXPECT_EQ(chain.run(0, layer, at::ones({1})).hidden.item<double>(), 10.0);  // empty: the layer alone
  auto inner = std::make_shared<LoggingRunner>("checkpointing", 1.0, log);
  auto outer = std::make_shared<LoggingRunner>("fsdp", 100.0, log);
  chain.wrap(inner);
  chain.wrap(outer);  // installed later: around the first
  log.clear();
  EXPECT_EQ(chain.run(3, layer, at::ones({1})).hidden.item<double>(), (1 + 100 + 1) * 10.0);
  EXPECT_EQ(log, (std::vector<std::string>{"fsdp enters layer 3", "checkpointing enters layer 3", "layer",
                                           "checkpointing leaves", "fsdp leaves"}));
  chain.remove(outer.get());
  log.clear();
  EXPECT_EQ(chain.size(), 1u);
  EXPECT_EQ(chain.run(1, layer, at::ones({1})).hidden.item<double>(), 20.0);
  EXPECT_EQ(log, (std::vector<std::string>{"checkpointing enters layer 1", "layer", "checkpointing leaves"}));
}

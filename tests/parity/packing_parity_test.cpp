// Packed documents under every kind of sequence sharding: llama-tiny trains on documents of 1
// to 90 tokens (some longer than the 64-token window, so split) packed with document-causal
// attention, on one rank and under cp 2, Ulysses sp 2, cp 2 × sp 2, tp 2 with sequence
// parallelism, FSDP 2 and pp 2 × cp 2; every step's loss and gradient norm within 1e-5 relative
// of one rank.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "support/train_curve.h"

using namespace meshtrain;
using namespace meshtrain::testing;

namespace {

constexpr int64_t kEos = 0;

class Documents : public data::TokenDataset {
 public:
  Documents() {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(17);
    for (int d = 0; d < 120; ++d) {
      const int64_t length = 1 + at::randint(90, {1}, gen).item<int64_t>();
      auto ids = at::randint(1, 256, {length - 1}, gen);
      for (int64_t i = 0; i < length - 1; ++i) tokens_.push_back(ids[i].item<int64_t>());
      tokens_.push_back(kEos);
    }
  }
  int64_t size() const override { return static_cast<int64_t>(tokens_.size()); }
  void read_into(int64_t start, int64_t length, int64_t* out) const override {
    std::copy_n(tokens_.begin() + start, length, out);
  }

 private:
  std::vector<int64_t> tokens_;
};

Curve train_packed(const std::string& name, const dist::MeshSizes& mesh_sizes, parallel::ParallelOptions options = {}) {
  static const Documents data;
  CurveRun how;
  how.data = &data;
  how.configure = [](train::Trainer& t) { t.packing_eos_token_id = kEos; };
  return train_curve("packed_" + name, mesh_sizes, options, how);
}

const Curve& one_rank() {
  static const Curve curve = train_packed("single", sizes(1, 1));
  return curve;
}

void expect_parity(const Curve& run) { expect_curves_close(run, one_rank(), 1e-5); }

parallel::ParallelOptions tp_with_sequence_parallel() {
  parallel::ParallelOptions o;
  o.sequence_parallel = true;
  return o;
}

}  // namespace

TEST(PackingParity, OneRankLearns) {
  const auto& ref = one_rank();
  ASSERT_EQ(ref.losses.size(), 6u);
  EXPECT_LT(ref.losses.back(), ref.losses.front());
}
TEST(PackingParity, ContextParallel2) { expect_parity(train_packed("cp2", sizes(1, 1, 2))); }
TEST(PackingParity, Ulysses2) { expect_parity(train_packed("sp2", sizes(1, 1, 1, 2))); }
TEST(PackingParity, ContextParallel2TimesUlysses2) { expect_parity(train_packed("cp2sp2", sizes(1, 1, 2, 2))); }
TEST(PackingParity, TensorParallel2WithSequenceParallel) {
  expect_parity(train_packed("tp2sp", sizes(1, 1, 1, 1, 2), tp_with_sequence_parallel()));
}
TEST(PackingParity, Fsdp2) { expect_parity(train_packed("fsdp2", sizes(1, 2))); }
TEST(PackingParity, Pipeline2TimesContextParallel2) {
  auto s = sizes(1, 1, 2);
  s.pp = 2;
  expect_parity(train_packed("pp2cp2", s));
}

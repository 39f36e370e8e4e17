#include "train/trainer.h"

#include <chrono>
#include <cstdio>
#include <fstream>

#include "data/window_sampler.h"
#include "dist/collectives.h"
#include "nn/causal_lm_loss.h"
#include "nn/moe.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/lr_schedule.h"
#include "util/check.h"
#include "util/gemm_rate.h"
#include "util/progress.h"

namespace meshtrain::train {

namespace fs = std::filesystem;

void MoeStepStats::add(const MoeStepStats& o) {
  aux_loss_sum += o.aux_loss_sum;
  micro_batches += o.micro_batches;
  dropped += o.dropped;
  if (o.tokens_per_expert.defined())
    tokens_per_expert = tokens_per_expert.defined() ? tokens_per_expert + o.tokens_per_expert : o.tokens_per_expert.clone();
}

double accumulate_gradients(parallel::ParallelModel& model, const std::vector<MicroBatch>& micro_batches,
                            int64_t step_targets, MoeStepStats* moe_stats) {
  const double denominator = static_cast<double>(std::max<int64_t>(step_targets, 1));
  const auto& moe = model.model().config().moe;
  const double aux_scale = moe && moe->output_router_logits
                               ? moe->router_aux_loss_coef / static_cast<double>(micro_batches.size())
                               : 0.0;
  double loss_sum = 0.0;
  for (size_t m = 0; m < micro_batches.size(); ++m) {
    auto& mb = micro_batches[m];
    auto sum = model.loss_sum(mb.input_ids, mb.targets);
    auto loss = sum / denominator;
    auto load = model.model().router_load();
    if (load.prob_sum.defined()) {
      // Global-batch load balancing: assignments, probabilities and rows of this micro-batch
      // summed over every rank holding different tokens (dp, cp, sp); this rank's loss term
      // uses its own probabilities, so the terms of all ranks add up to the global micro-batch's.
      const int64_t E = load.assignments.size(0);
      auto totals = at::cat({load.assignments, load.prob_sum.detach(), at::full({1}, static_cast<double>(load.rows))})
                        .to(at::kDouble);
      dist::all_reduce_(model.mesh().group("dp_cp_sp"), totals);
      const double rows = totals[2 * E].item<double>();
      auto assignments = totals.slice(0, 0, E).to(at::kFloat);
      if (aux_scale != 0.0) loss = loss + nn::balance_loss(assignments, load.prob_sum, rows) * aux_scale;
      if (moe_stats) {
        auto aux = nn::balance_loss(assignments, totals.slice(0, E, 2 * E).to(at::kFloat), rows);
        MoeStepStats mine{aux.item<double>(), 1, {}, 0};
        std::vector<at::Tensor> counts;
        for (auto& layer : model.model().moe_layers()) {
          counts.push_back(layer->last_stats().tokens_per_expert);
          mine.dropped += layer->last_stats().dropped;
        }
        mine.tokens_per_expert = at::stack(counts);
        moe_stats->add(mine);
      }
    }
    model.prepare_backward(m + 1 == micro_batches.size());
    loss.backward();
    loss_sum += sum.item<double>();
  }
  model.finish_backward();
  return loss_sum;
}

Trainer::Trainer(std::shared_ptr<parallel::ParallelModel> model, const data::TokenDataset& dataset, int64_t seq_len,
                 TrainingArguments args)
    : model_(std::move(model)), dataset_(dataset), seq_len_(seq_len), args_(std::move(args)) {
  args_.validate();
  const auto& c = model_->model().config();
  MT_CHECK(seq_len_ >= 2, "--seq_len must be at least 2, got ", seq_len_);
  model_->check_sequence_length(seq_len_);
  MT_CHECK(dataset_.max_token() < c.vocab_size, "the data holds token id ", dataset_.max_token(),
           " but the model's vocab_size is ", c.vocab_size);
}

std::vector<StepRecord> Trainer::train() {
  const auto& mesh = model_->mesh();
  auto& dp = mesh.group("dp");
  const bool main_rank = mesh.rank() == 0;
  const bool talk = verbose && main_rank;
  const fs::path out_dir(args_.output_dir);
  if (main_rank) fs::create_directories(out_dir);
  data::WindowSampler sampler(dataset_, seq_len_, static_cast<uint64_t>(args_.seed));
  AdamW optimizer(model_->model().named_params(),
                  {args_.adam_beta1, args_.adam_beta2, args_.adam_epsilon, args_.weight_decay});

  TrainerState state{0, 0, args_.to_json()};
  if (!args_.resume_from_checkpoint.empty()) {
    fs::path ckpt = args_.resume_from_checkpoint;
    if (args_.resume_from_checkpoint == "latest") {
      auto latest = latest_checkpoint(out_dir);
      MT_CHECK(latest, "--resume_from_checkpoint latest: no checkpoint-N in ", out_dir);
      ckpt = *latest;
    }
    state = load_training_checkpoint(ckpt, *model_, optimizer);
    state.args = args_.to_json();
    if (talk) std::fprintf(stderr, "resumed from %s at step %lld\n", ckpt.c_str(), (long long)state.global_step);
  }

  const int64_t micro = args_.per_device_train_batch_size;
  const int64_t accum = args_.gradient_accumulation_steps;
  const int64_t dp_size = dp.size(), dp_rank = dp.rank();
  const int64_t global_batch = micro * accum * dp_size;
  const double flops_per_token = model_->model().config().flops_per_token(seq_len_);
  if (peak_flops <= 0) peak_flops = util::measure_gemm_flops();
  if (talk)
    std::fprintf(stderr, "training %lld parameters on %d rank(s), total_train_batch_size %lld x %lld tokens, %lld steps\n",
                 (long long)model_->model().config().num_parameters(), mesh.world_size(), (long long)global_batch,
                 (long long)seq_len_, (long long)args_.max_steps);

  std::ofstream metrics;
  if (main_rank) metrics.open(out_dir / "metrics.jsonl", std::ios::app);
  util::Progress progress(args_.max_steps);
  std::vector<StepRecord> records;
  const bool is_moe = !model_->model().moe_layers().empty();
  MoeStepStats interval_moe;
  double interval_loss = 0.0;
  int64_t interval_steps = 0, interval_tokens = 0;
  auto interval_start = std::chrono::steady_clock::now();

  for (int64_t step = state.global_step; step < args_.max_steps; ++step) {
    // The global step reads stream positions [data_position, data_position + global_batch):
    // micro-batch m of dp rank r holds rows starting at (m·dp + r)·micro, whatever the layout.
    std::vector<MicroBatch> micro_batches;
    int64_t local_targets = 0;
    for (int64_t m = 0; m < accum; ++m) {
      auto ids = sampler.batch(state.data_position + (m * dp_size + dp_rank) * micro, micro);
      micro_batches.push_back({ids, nn::shift_labels(ids)});
      local_targets += nn::count_targets(micro_batches.back().targets);
    }
    auto step_targets = at::tensor(local_targets, at::kLong);
    dist::all_reduce_(dp, step_targets);
    MoeStepStats step_moe;
    auto loss_sum = at::tensor(
        accumulate_gradients(*model_, micro_batches, step_targets.item<int64_t>(), is_moe ? &step_moe : nullptr),
        at::kDouble);
    auto& token_ranks = mesh.group("dp_cp_sp");  // cp / sp ranks summed their own tokens
    dist::all_reduce_(token_ranks, loss_sum);
    if (is_moe) {  // [aux sum, micro-batches, dropped, tokens per expert...] summed likewise
      // (every rank holds each global micro-batch's aux: the sum / micro-batches is the mean)
      auto packed = at::cat({at::tensor({step_moe.aux_loss_sum, static_cast<double>(step_moe.micro_batches),
                                         static_cast<double>(step_moe.dropped)}, at::kDouble),
                             step_moe.tokens_per_expert.reshape({-1}).to(at::kDouble)});
      dist::all_reduce_(token_ranks, packed);
      step_moe.aux_loss_sum = packed[0].item<double>();
      step_moe.micro_batches = packed[1].item<int64_t>();
      step_moe.dropped = packed[2].item<int64_t>();
      step_moe.tokens_per_expert =
          packed.slice(0, 3).round().to(at::kLong).view(step_moe.tokens_per_expert.sizes());
      interval_moe.add(step_moe);
    }
    state.data_position += global_batch;

    const double grad_norm = model_->clip_grad_norm(args_.max_grad_norm);
    const double lr = args_.learning_rate *
                      lr_multiplier(args_.lr_scheduler_type, step, args_.warmup_steps, args_.max_steps);
    optimizer.step(lr);
    optimizer.zero_grad();
    state.global_step = step + 1;

    const double loss = loss_sum.item<double>() / static_cast<double>(std::max<int64_t>(step_targets.item<int64_t>(), 1));
    records.push_back({state.global_step, loss, grad_norm, lr});
    interval_loss += loss;
    interval_tokens += global_batch * seq_len_;
    ++interval_steps;

    const bool log = state.global_step % args_.logging_steps == 0 || state.global_step == args_.max_steps;
    std::string line;
    if (log && main_rank) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - interval_start).count();
      const double tokens_per_s = static_cast<double>(interval_tokens) / seconds;
      // MFU per device: the measured GEMM rate is one rank's.
      const double mfu = tokens_per_s * flops_per_token / (peak_flops * mesh.world_size());
      nlohmann::json j = {{"step", state.global_step},
                          {"loss", interval_loss / static_cast<double>(interval_steps)},
                          {"grad_norm", grad_norm},
                          {"lr", lr},
                          {"tokens", state.data_position * seq_len_},
                          {"tokens_per_s", tokens_per_s},
                          {"mfu", mfu}};
      if (is_moe) {
        j["aux_loss"] = interval_moe.aux_loss_sum / static_cast<double>(std::max<int64_t>(interval_moe.micro_batches, 1));
        j["dropped_tokens"] = interval_moe.dropped;
        auto counts = interval_moe.tokens_per_expert.contiguous();
        std::vector<std::vector<int64_t>> per_layer;
        for (int64_t l = 0; l < counts.size(0); ++l)
          per_layer.emplace_back(counts[l].data_ptr<int64_t>(), counts[l].data_ptr<int64_t>() + counts.size(1));
        j["tokens_per_expert"] = per_layer;
      }
      metrics << j.dump() << "\n" << std::flush;
      char buf[160];
      std::snprintf(buf, sizeof buf, "step %lld loss %.4f grad_norm %.3f lr %.3g tokens/s %.0f mfu %.1f%%",
                    (long long)state.global_step, j["loss"].get<double>(), grad_norm, lr, tokens_per_s, 100 * mfu);
      line = buf;
    }
    if (log) {
      interval_loss = 0.0;
      interval_steps = interval_tokens = 0;
      interval_moe = MoeStepStats{};
      interval_start = std::chrono::steady_clock::now();
    }
    if (talk) progress.update(state.global_step, line, log);
    if (args_.save_steps > 0 && state.global_step % args_.save_steps == 0 && state.global_step < args_.max_steps)
      save_training_checkpoint(out_dir, *model_, optimizer, state);
  }
  if (talk) progress.finish();
  export_hf_checkpoint(*model_, out_dir);
  if (talk) std::fprintf(stderr, "saved the model to %s\n", out_dir.c_str());
  return records;
}

}  // namespace meshtrain::train

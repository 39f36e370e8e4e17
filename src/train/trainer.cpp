#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "data/window_sampler.h"
#include "dist/device_mesh.h"
#include "dist/failure_board.h"
#include "nn/causal_lm_loss.h"
#include "parallel/pipeline_schedule.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/evaluation.h"
#include "train/lr_schedule.h"
#include "train/preemption.h"
#include "train/run_directory.h"
#include "train/tensorboard_scalars.h"
#include "train/tensorboard_writer.h"
#include "util/check.h"
#include "util/files.h"
#include "util/gemm_rate.h"
#include "util/memory_meter.h"
#include "util/progress.h"

namespace meshtrain::train {

namespace fs = std::filesystem;

namespace {

// What is logged every logging_steps steps (and every evaluation): the interval's mean loss,
// its throughput and MFU, rank 0's peak tensor memory (when metered) and bytes sent per step on
// each mesh dim, and for MoE models its routing. Written to metrics.jsonl by rank 0, and as
// TensorBoard scalars when a writer is given.
class IntervalLog {
 public:
  IntervalLog(const fs::path& metrics, const dist::DeviceMesh& mesh, double flops_per_token, double peak_flops,
              c10::Device device, std::unique_ptr<TensorBoardWriter> tensorboard)
      : mesh_(mesh), main_rank_(mesh.rank() == 0), flops_per_token_(flops_per_token), peak_flops_(peak_flops),
        world_(mesh.world_size()), device_(device), tensorboard_(std::move(tensorboard)) {
    if (main_rank_) out_ = util::AppendFile(metrics);
    bytes_at_start_ = bytes_sent();
    util::reset_peak_memory(device_);  // the first interval's peak is training's, not the model set-up's
  }

  void add(const StepRecord& r, int64_t tokens) {
    loss_ += r.loss;
    tokens_ += tokens;
    ++steps_;
    if (r.moe) moe_.add(*r.moe);
  }

  // Writes the interval ending with record r (tokens_seen so far) and starts the next one;
  // returns the progress line.
  std::string flush(const StepRecord& r, int64_t tokens_seen) {
    std::string line;
    if (main_rank_) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      const double tokens_per_s = static_cast<double>(tokens_) / seconds;
      // MFU per device: the measured GEMM rate is one rank's.
      const double mfu = tokens_per_s * flops_per_token_ / (peak_flops_ * world_);
      const double loss = loss_ / static_cast<double>(steps_);
      nlohmann::json j = {{"step", r.step},         {"loss", loss},  {"grad_norm", r.grad_norm},
                          {"lr", r.lr},             {"tokens", tokens_seen},
                          {"tokens_per_s", tokens_per_s}, {"mfu", mfu}};
      const auto bytes = bytes_sent();
      nlohmann::json per_dim = nlohmann::json::object();
      for (auto& [dim, sent] : bytes)
        if (sent > bytes_at_start_[dim]) per_dim[name_of(dim)] = static_cast<double>(sent - bytes_at_start_[dim]) / steps_;
      if (!per_dim.empty()) j["bytes_sent_per_step"] = per_dim;
      const bool metered = device_.is_cuda() || util::memory_meter_installed();
      const double peak_mib = static_cast<double>(util::max_memory_allocated(device_)) / (1 << 20);
      if (metered) j["peak_memory_mib"] = peak_mib;
      if (moe_.micro_batches > 0) {
        j["aux_loss"] = moe_.aux_loss();
        j["dropped_tokens"] = moe_.dropped;
        auto counts = moe_.tokens_per_expert.contiguous();
        std::vector<std::vector<int64_t>> per_layer;
        for (int64_t l = 0; l < counts.size(0); ++l)
          per_layer.emplace_back(counts[l].data_ptr<int64_t>(), counts[l].data_ptr<int64_t>() + counts.size(1));
        j["tokens_per_expert"] = per_layer;
      }
      out_.append(j.dump() + "\n");
      if (tensorboard_) tensorboard_->add_scalars(r.step, tensorboard_scalars(j));
      char buf[160];
      std::snprintf(buf, sizeof buf, "step %lld loss %.4f grad_norm %.3f lr %.3g tokens/s %.0f mfu %.1f%%",
                    (long long)r.step, loss, r.grad_norm, r.lr, tokens_per_s, 100 * mfu);
      line = buf;
      if (metered) line += str_cat(" mem ", static_cast<int64_t>(std::ceil(peak_mib)), "MiB");
    }
    loss_ = 0.0;
    steps_ = tokens_ = 0;
    moe_ = parallel::MoeStepStats{};
    util::reset_peak_memory(device_);
    bytes_at_start_ = bytes_sent();
    start_ = std::chrono::steady_clock::now();
    return line;
  }

  // Writes an evaluation's row and returns its progress line; its time is left out of the
  // interval's throughput.
  std::string add_eval(int64_t step, const EvalResult& eval, std::chrono::steady_clock::duration took) {
    start_ += took;
    if (!main_rank_) return "";
    nlohmann::json j = {{"step", step}, {"eval_loss", eval.loss}, {"eval_ppl", eval.perplexity()},
                        {"eval_tokens", eval.tokens}, {"eval_runtime", std::chrono::duration<double>(took).count()}};
    out_.append(j.dump() + "\n");
    if (tensorboard_) tensorboard_->add_scalars(step, tensorboard_scalars(j));
    char buf[120];
    std::snprintf(buf, sizeof buf, "step %lld eval_loss %.4f eval_ppl %.3f", (long long)step, eval.loss,
                  eval.perplexity());
    return buf;
  }

 private:
  std::map<MeshDim, uint64_t> bytes_sent() const {
    std::map<MeshDim, uint64_t> out;
    for (auto dim : mesh_.dims_with_groups()) out[dim] = mesh_.group(dim).bytes_sent();
    return out;
  }

  const dist::DeviceMesh& mesh_;
  bool main_rank_;
  double flops_per_token_, peak_flops_;
  int world_;
  c10::Device device_;
  util::AppendFile out_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
  double loss_ = 0.0;
  int64_t steps_ = 0, tokens_ = 0;
  parallel::MoeStepStats moe_;
  std::map<MeshDim, uint64_t> bytes_at_start_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// The state to start from: a fresh run, or a checkpoint (resume_from_checkpoint, "latest" being
// output_dir's newest; after a restart, that newest one if there is any) restored into the model
// and optimizer.
TrainerState start_state(const TrainingArguments& args, parallel::ParallelModel& model, AdamW& optimizer, bool talk,
                         bool resume_if_possible) {
  TrainerState state{0, 0, args.to_json()};
  fs::path ckpt = args.resume_from_checkpoint;
  if (ckpt.empty() && resume_if_possible) ckpt = latest_checkpoint(args.output_dir).value_or(fs::path());
  if (ckpt.empty()) return state;
  if (args.resume_from_checkpoint == "latest") {
    auto latest = latest_checkpoint(args.output_dir);
    MT_CHECK(latest, "--resume_from_checkpoint latest: no checkpoint-N in ", fs::path(args.output_dir));
    ckpt = *latest;
  }
  state = load_training_checkpoint(ckpt, model, optimizer);
  state.args = args.to_json();
  if (talk) std::fprintf(stderr, "resumed from %s at step %lld\n", ckpt.c_str(), (long long)state.global_step);
  return state;
}

// On resume, the rows of metrics.jsonl past the resumed step go: they belong to the run that was
// interrupted, and the file stays one curve.
void keep_metrics_through(const fs::path& metrics, int64_t step) {
  if (!fs::exists(metrics)) return;
  std::istringstream in(util::read_file(metrics));
  std::string kept;
  for (std::string line; std::getline(in, line);) {
    try {
      if (nlohmann::json::parse(line).at("step").get<int64_t>() > step) continue;
    } catch (const nlohmann::json::exception&) {
      continue;  // a line torn by a crash
    }
    kept += line + "\n";
  }
  util::write_file_atomic(metrics, kept);
}

// A loss or gradient norm that is not finite would make every weight NaN: stop before the update.
void check_finite(int64_t step, double loss, double grad_norm, const fs::path& out_dir) {
  if (std::isfinite(loss) && std::isfinite(grad_norm)) return;
  const auto last = latest_checkpoint(out_dir);
  fail("step ", step, ": the loss is ", loss, " and the gradient norm ", grad_norm,
       "; stopped before the optimizer step. ",
       last ? "The last good checkpoint is " + last->string() : std::string("No checkpoint was saved"),
       " (lower --learning_rate or raise --warmup_steps, then --resume_from_checkpoint)");
}

void report_packing(const data::PackedDocuments& p) {
  const double filled = 100.0 * static_cast<double>(p.tokens()) / static_cast<double>(p.num_windows() * p.seq_len());
  std::fprintf(stderr, "packing: %lld documents into %lld windows of %lld tokens (%.1f%% data, the rest padding)",
               (long long)p.documents(), (long long)p.num_windows(), (long long)p.seq_len(), filled);
  if (p.split_documents() > 0)
    std::fprintf(stderr, "; %lld documents longer than %lld tokens were split", (long long)p.split_documents(),
                 (long long)p.seq_len());
  std::fprintf(stderr, "\n");
}

}  // namespace

Trainer::Trainer(std::shared_ptr<parallel::ParallelModel> model, const data::TokenDataset& dataset, int64_t seq_len,
                 TrainingArguments args)
    : model_(std::move(model)), dataset_(dataset), seq_len_(seq_len), args_(std::move(args)) {
  args_.validate();
  MT_CHECK(seq_len_ >= 2, "--seq_len must be at least 2, got ", seq_len_);
  model_->check_sequence_length(seq_len_);
  if (model_->mesh().size(MeshDim::Pp) > 1)
    parallel::check_pipeline_micro_batches(model_->pipeline().schedule, model_->mesh().size(MeshDim::Pp),
                                           args_.gradient_accumulation_steps);
  dataset_.check_ids(model_->model().config().vocab_size);
}

std::vector<parallel::MicroBatch> Trainer::micro_batches(const data::WindowSampler& sampler, int64_t position) const {
  // The global step reads stream positions [position, position + global batch): micro-batch m
  // of dp rank r holds rows starting at (m·dp + r)·micro, whatever the layout.
  auto& dp = model_->mesh().group(MeshDim::Dp);
  const int64_t micro = args_.per_device_train_batch_size;
  std::vector<parallel::MicroBatch> out;
  for (int64_t m = 0; m < args_.gradient_accumulation_steps; ++m) {
    const int64_t first = position + (m * dp.size() + dp.rank()) * micro;
    if (sampler.packed()) {
      auto rows = sampler.packed_batch(first, micro);
      out.push_back({rows.input_ids, rows.targets, rows.position_ids});
    } else {
      auto ids = sampler.batch(first, micro);
      out.push_back({ids, nn::shift_labels(ids)});
    }
  }
  return out;
}

bool Trainer::evaluates_after(int64_t step) const {
  return args_.eval_strategy == EvalStrategy::Steps && (step % args_.eval_interval() == 0 || step == args_.max_steps);
}

std::vector<StepRecord> Trainer::train() {
  MT_CHECK(args_.eval_strategy == EvalStrategy::No || eval_data,
           "--eval_strategy steps needs eval data (--eval_data or --validation_split_percentage)");
  if (eval_data) check_eval_data(*eval_data, seq_len_, model_->model().config().vocab_size);
  const auto& mesh = model_->mesh();
  const bool main_rank = mesh.rank() == 0;
  const bool talk = verbose && main_rank;
  const fs::path out_dir(args_.output_dir);
  std::unique_ptr<RunDirectory> run_dir;
  dist::collective_check(mesh.group(MeshDim::World),
                         [&] { run_dir = std::make_unique<RunDirectory>(out_dir, mesh.rank()); });
  std::unique_ptr<data::PackedDocuments> packing;
  if (packing_eos_token_id) {
    packing = std::make_unique<data::PackedDocuments>(dataset_, seq_len_, *packing_eos_token_id);
    if (talk) report_packing(*packing);
  }
  const auto seed = static_cast<uint64_t>(args_.seed);
  auto sampler = packing ? data::WindowSampler(*packing, seed) : data::WindowSampler(dataset_, seq_len_, seed);
  AdamW optimizer(model_->model().named_params(),
                  {args_.adam_beta1, args_.adam_beta2, args_.adam_epsilon, args_.weight_decay});
  TrainerState state = start_state(args_, *model_, optimizer, talk, resume_if_possible);
  const bool resumed = state.global_step > 0 || resume_if_possible;
  if (main_rank && resumed) keep_metrics_through(out_dir / "metrics.jsonl", state.global_step);
  // A new event file per run start; after a resume, TensorBoard drops the earlier files' events
  // past the resumed step, as metrics.jsonl dropped its rows.
  std::unique_ptr<TensorBoardWriter> tensorboard;
  if (args_.reports_to_tensorboard())
    dist::collective_check(mesh.group(MeshDim::World), [&] {
      if (!main_rank) return;
      tensorboard = std::make_unique<TensorBoardWriter>(args_.tensorboard_dir());
      if (resumed) tensorboard->add_session_start(state.global_step + 1);
    });
  if (auto* flight = mesh.flight_recorder()) flight->note_step(state.global_step);  // a resumed run's start
  PreemptionWatch preemption;

  const int64_t global_batch = args_.per_device_train_batch_size * args_.gradient_accumulation_steps *
                               mesh.size(MeshDim::Dp);
  // MFU against the matmul rate of the dtype and device the model computes in.
  if (peak_flops <= 0)
    peak_flops = util::measure_gemm_flops(model_->device().is_cuda() ? 8192 : 2048, 3, model_->bf16(), model_->device());
  if (talk)
    std::fprintf(stderr, "training %lld parameters on %d rank(s), total_train_batch_size %lld x %lld tokens, %lld steps\n",
                 (long long)model_->model().config().num_parameters(), mesh.world_size(), (long long)global_batch,
                 (long long)seq_len_, (long long)args_.max_steps);
  IntervalLog log(out_dir / "metrics.jsonl", mesh, model_->model().config().flops_per_token(seq_len_), peak_flops,
                  model_->device(), std::move(tensorboard));
  util::Progress progress(args_.max_steps);
  std::vector<StepRecord> records;
  for (int64_t step = state.global_step; step < args_.max_steps; ++step) {
    // One optimizer step: the step's loss and synchronised gradients, clipping, AdamW.
    auto loss = parallel::step_loss(*model_, micro_batches(sampler, state.data_position), parallel::Pass::ForwardBackward);
    state.data_position += global_batch;
    const double grad_norm = model_->clip_grad_norm(args_.max_grad_norm);
    check_finite(step + 1, loss.mean(), grad_norm, out_dir);  // the same global values on every rank
    const double lr = args_.learning_rate *
                      lr_multiplier(args_.lr_scheduler_type, step, args_.warmup_steps, args_.max_steps);
    optimizer.step(lr);
    optimizer.zero_grad();
    state.global_step = step + 1;
    if (auto* flight = mesh.flight_recorder()) flight->note_step(state.global_step);
    const auto& record = records.emplace_back(StepRecord{state.global_step, loss.mean(), grad_norm, lr, loss.moe});

    log.add(record, global_batch * seq_len_);
    const bool logging = state.global_step % args_.logging_steps == 0 || state.global_step == args_.max_steps;
    const std::string line = logging ? log.flush(record, state.data_position * seq_len_) : "";
    if (talk) progress.update(state.global_step, line, logging);
    if (evaluates_after(state.global_step)) {
      const auto start = std::chrono::steady_clock::now();
      const auto eval = evaluate(*model_, *eval_data, seq_len_, args_.per_device_eval_batch_size);
      const std::string eval_line = log.add_eval(state.global_step, eval, std::chrono::steady_clock::now() - start);
      if (talk) progress.update(state.global_step, eval_line, true);
    }
    const bool more = state.global_step < args_.max_steps;
    const bool stop = more && preemption.requested(mesh.group(MeshDim::World));
    if ((more && args_.save_steps > 0 && state.global_step % args_.save_steps == 0) || stop) {
      const auto saved = save_training_checkpoint(out_dir, *model_, optimizer, state);
      if (main_rank && args_.save_total_limit > 0) prune_checkpoints(out_dir, args_.save_total_limit);
      if (stop) {
        if (talk) progress.finish();
        if (talk)
          std::fprintf(stderr, "SIGTERM: saved %s after step %lld; continue with --resume_from_checkpoint latest\n",
                       saved.c_str(), (long long)state.global_step);
        preempted_ = true;
        return records;
      }
    }
  }
  if (talk) progress.finish();
  export_hf_checkpoint(*model_, out_dir);
  if (talk) std::fprintf(stderr, "saved the model to %s\n", out_dir.c_str());
  return records;
}

}  // namespace meshtrain::train

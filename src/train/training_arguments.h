// TrainingArguments with Hugging Face's names, read from a JSON file and then from flags
// (flags win). Every value is validated here, once; the rest of the trainer trusts it.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>

namespace meshtrain::train {

enum class LrSchedulerType { Linear, Cosine, Constant, ConstantWithWarmup };
enum class EvalStrategy { No, Steps };
// Where metrics go besides metrics.jsonl (HF's report_to; "all" is every integration we have).
enum class ReportTo { None, TensorBoard, All };

struct TrainingArguments {
  int64_t per_device_train_batch_size = 8;
  int64_t gradient_accumulation_steps = 1;
  double learning_rate = 5e-5;
  double weight_decay = 0.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_epsilon = 1e-8;
  double max_grad_norm = 1.0;  // <= 0: no clipping
  int64_t max_steps = 100;
  int64_t warmup_steps = 0;
  LrSchedulerType lr_scheduler_type = LrSchedulerType::Linear;
  int64_t logging_steps = 10;
  EvalStrategy eval_strategy = EvalStrategy::No;  // steps: every eval_steps and after the last step
  int64_t eval_steps = 0;                         // 0: logging_steps, as upstream
  int64_t per_device_eval_batch_size = 8;
  int64_t save_steps = 500;  // 0: no intermediate checkpoints
  int64_t save_total_limit = 0;  // keep the newest N checkpoints; 0: all
  int64_t seed = 42;
  std::string output_dir = "runs/meshtrain";
  std::string resume_from_checkpoint;  // a checkpoint-N dir, or "latest" in output_dir
  ReportTo report_to = ReportTo::None;  // transformers 5's default
  std::string logging_dir;  // TensorBoard event files; empty: <output_dir>/runs

  bool reports_to_tensorboard() const { return report_to != ReportTo::None; }
  std::string tensorboard_dir() const { return logging_dir.empty() ? output_dir + "/runs" : logging_dir; }

  // Sets one field from its textual value; unknown names and bad values throw UsageError.
  void set(const std::string& name, const std::string& value);
  static bool has_field(const std::string& name);
  // JSON object of field -> value (numbers, strings); unknown keys are an error.
  void update_from_json(const nlohmann::json& j, const std::string& source);
  nlohmann::json to_json() const;
  // Cross-field checks (positive sizes, warmup <= max_steps, ...).
  void validate() const;
  // name -> one-line help, for --help.
  static const std::map<std::string, std::string>& field_help();
  // Steps between evaluations when eval_strategy is steps.
  int64_t eval_interval() const { return eval_steps > 0 ? eval_steps : logging_steps; }
};

std::string to_string(LrSchedulerType t);
std::string to_string(EvalStrategy s);
std::string to_string(ReportTo r);

}  // namespace meshtrain::train

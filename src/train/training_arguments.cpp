#include "train/training_arguments.h"

#include <charconv>
#include <cmath>
#include <functional>

#include "util/check.h"

namespace meshtrain::train {

namespace {

using Setter = std::function<void(TrainingArguments&, const std::string&, const std::string&)>;

int64_t parse_int(const std::string& name, const std::string& v) {
  int64_t out = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || end != v.data() + v.size())
    throw UsageError(str_cat("--", name, " expects an integer, got '", v, "'"));
  return out;
}

double parse_double(const std::string& name, const std::string& v) {
  try {
    size_t used = 0;
    double out = std::stod(v, &used);
    if (used == v.size() && std::isfinite(out)) return out;
  } catch (const std::exception&) {
  }
  throw UsageError(str_cat("--", name, " expects a finite number, got '", v, "'"));
}

LrSchedulerType parse_scheduler(const std::string& v) {
  if (v == "linear") return LrSchedulerType::Linear;
  if (v == "cosine") return LrSchedulerType::Cosine;
  if (v == "constant") return LrSchedulerType::Constant;
  if (v == "constant_with_warmup") return LrSchedulerType::ConstantWithWarmup;
  throw UsageError(str_cat("--lr_scheduler_type must be one of linear, cosine, constant, "
                           "constant_with_warmup; got '", v, "'"));
}

EvalStrategy parse_eval_strategy(const std::string& v) {
  if (v == "no") return EvalStrategy::No;
  if (v == "steps") return EvalStrategy::Steps;
  if (v == "epoch")
    throw UsageError("--eval_strategy epoch is not supported: training runs for --max_steps; use steps");
  throw UsageError(str_cat("--eval_strategy must be one of no, steps; got '", v, "'"));
}

ReportTo parse_report_to(const std::string& v) {
  if (v == "none") return ReportTo::None;
  if (v == "tensorboard") return ReportTo::TensorBoard;
  if (v == "all") return ReportTo::All;
  throw UsageError(str_cat("--report_to must be one of tensorboard, none, all; got '", v, "'"));
}

struct Field {
  Setter set;
  std::function<nlohmann::json(const TrainingArguments&)> get;
  std::string help;
};

#define MT_INT_FIELD(f, h) \
  {#f, {[](auto& a, auto& n, auto& v) { a.f = parse_int(n, v); }, [](auto& a) { return nlohmann::json(a.f); }, h}}
#define MT_DOUBLE_FIELD(f, h) \
  {#f, {[](auto& a, auto& n, auto& v) { a.f = parse_double(n, v); }, [](auto& a) { return nlohmann::json(a.f); }, h}}
#define MT_STRING_FIELD(f, h) \
  {#f, {[](auto& a, auto&, auto& v) { a.f = v; }, [](auto& a) { return nlohmann::json(a.f); }, h}}

const std::map<std::string, Field>& fields() {
  static const std::map<std::string, Field> table = {
      MT_INT_FIELD(per_device_train_batch_size, "sequences per rank per micro-batch"),
      MT_INT_FIELD(gradient_accumulation_steps, "micro-batches per optimizer step"),
      MT_DOUBLE_FIELD(learning_rate, "peak learning rate of AdamW"),
      MT_DOUBLE_FIELD(weight_decay, "AdamW weight decay (not applied to norms and biases)"),
      MT_DOUBLE_FIELD(adam_beta1, "AdamW beta1"),
      MT_DOUBLE_FIELD(adam_beta2, "AdamW beta2"),
      MT_DOUBLE_FIELD(adam_epsilon, "AdamW epsilon"),
      MT_DOUBLE_FIELD(max_grad_norm, "global gradient-norm clip (<= 0: off)"),
      MT_INT_FIELD(max_steps, "optimizer steps to train"),
      MT_INT_FIELD(warmup_steps, "linear warm-up steps"),
      {"lr_scheduler_type",
       {[](auto& a, auto&, auto& v) { a.lr_scheduler_type = parse_scheduler(v); },
        [](auto& a) { return nlohmann::json(to_string(a.lr_scheduler_type)); },
        "linear | cosine | constant | constant_with_warmup"}},
      MT_INT_FIELD(logging_steps, "log every N steps (metrics.jsonl, progress)"),
      {"eval_strategy", {[](auto& a, auto&, auto& v) { a.eval_strategy = parse_eval_strategy(v); },
                         [](auto& a) { return nlohmann::json(to_string(a.eval_strategy)); },
                         "no | steps: eval_loss on the eval data every eval_steps and after the last step"}},
      MT_INT_FIELD(eval_steps, "evaluate every N steps (0: logging_steps)"),
      MT_INT_FIELD(per_device_eval_batch_size, "eval windows per forward and data-parallel rank"),
      MT_INT_FIELD(save_steps, "checkpoint every N steps (0: only the final model)"),
      MT_INT_FIELD(save_total_limit, "keep only the newest N checkpoint-* directories (0: keep all)"),
      MT_INT_FIELD(seed, "seed for initialisation and data order"),
      MT_STRING_FIELD(output_dir, "where metrics, checkpoints and the final model go"),
      MT_STRING_FIELD(resume_from_checkpoint, "checkpoint-N directory, or 'latest' in output_dir"),
      {"report_to",
       {[](auto& a, auto&, auto& v) { a.report_to = parse_report_to(v); },
        [](auto& a) { return nlohmann::json(to_string(a.report_to)); },
        "tensorboard | none | all: also write the logged metrics as TensorBoard events"}},
      MT_STRING_FIELD(logging_dir, "where TensorBoard event files go (empty: <output_dir>/runs)"),
  };
  return table;
}

}  // namespace

std::string to_string(LrSchedulerType t) {
  switch (t) {
    case LrSchedulerType::Linear: return "linear";
    case LrSchedulerType::Cosine: return "cosine";
    case LrSchedulerType::Constant: return "constant";
    case LrSchedulerType::ConstantWithWarmup: return "constant_with_warmup";
  }
  return "?";
}

std::string to_string(EvalStrategy s) { return s == EvalStrategy::Steps ? "steps" : "no"; }

std::string to_string(ReportTo r) {
  switch (r) {
    case ReportTo::None: return "none";
    case ReportTo::TensorBoard: return "tensorboard";
    case ReportTo::All: return "all";
  }
  return "?";
}

bool TrainingArguments::has_field(const std::string& name) { return fields().contains(name); }

void TrainingArguments::set(const std::string& name, const std::string& value) {
  auto it = fields().find(name);
  if (it == fields().end()) throw UsageError(str_cat("unknown training argument '", name, "'"));
  it->second.set(*this, name, value);
}

void TrainingArguments::update_from_json(const nlohmann::json& j, const std::string& source) {
  MT_CHECK(j.is_object(), source, ": training arguments must be a JSON object");
  for (auto& [key, value] : j.items()) {
    if (!has_field(key)) throw UsageError(str_cat(source, ": unknown training argument '", key, "'"));
    set(key, value.is_string() ? value.get<std::string>() : value.dump());
  }
}

nlohmann::json TrainingArguments::to_json() const {
  nlohmann::json j;
  for (auto& [name, field] : fields()) j[name] = field.get(*this);
  return j;
}

void TrainingArguments::validate() const {
  auto positive = [](const char* name, auto v) {
    if (v <= 0) throw UsageError(str_cat("--", name, " must be positive, got ", v));
  };
  positive("per_device_train_batch_size", per_device_train_batch_size);
  positive("gradient_accumulation_steps", gradient_accumulation_steps);
  positive("max_steps", max_steps);
  positive("logging_steps", logging_steps);
  positive("learning_rate", learning_rate);
  positive("adam_epsilon", adam_epsilon);
  positive("per_device_eval_batch_size", per_device_eval_batch_size);
  if (eval_steps < 0) throw UsageError(str_cat("--eval_steps must be >= 0, got ", eval_steps));
  if (save_steps < 0) throw UsageError(str_cat("--save_steps must be >= 0, got ", save_steps));
  if (save_total_limit < 0) throw UsageError(str_cat("--save_total_limit must be >= 0, got ", save_total_limit));
  if (warmup_steps < 0 || warmup_steps > max_steps)
    throw UsageError(str_cat("--warmup_steps must be in [0, max_steps=", max_steps, "], got ", warmup_steps));
  if (weight_decay < 0) throw UsageError(str_cat("--weight_decay must be >= 0, got ", weight_decay));
  for (auto [name, b] : {std::pair{"adam_beta1", adam_beta1}, {"adam_beta2", adam_beta2}})
    if (b < 0 || b >= 1) throw UsageError(str_cat("--", name, " must be in [0, 1), got ", b));
  if (output_dir.empty()) throw UsageError("--output_dir must not be empty");
}

const std::map<std::string, std::string>& TrainingArguments::field_help() {
  static const auto help = [] {
    std::map<std::string, std::string> h;
    TrainingArguments defaults;
    auto values = defaults.to_json();
    for (auto& [name, field] : fields()) h[name] = field.help + " (default " + values[name].dump() + ")";
    return h;
  }();
  return help;
}

}  // namespace meshtrain::train

// meshtrain train: a fresh model from --config_name or an HF checkpoint from
// --model_name_or_path, trained on --data. With neither, the default job: llama-tiny on
// data/corpus.txt with configs/llama-tiny/train.json.
#include <iostream>

#include "data/token_dataset.h"
#include "data/tokenizer.h"
#include "data/validation_split.h"
#include "models/hf_weights.h"
#include "tools/commands.h"
#include "tools/flight_dump.h"
#include "tools/flags.h"
#include "tools/parallel_flags.h"
#include "tools/text_data.h"
#include "train/trainer.h"
#include "util/check.h"
#include "util/files.h"

namespace meshtrain::tools {

namespace {

constexpr const char* kDefaultConfig = "configs/llama-tiny/config.json";
constexpr const char* kDefaultArgs = "configs/llama-tiny/train.json";
constexpr const char* kDefaultData = "data/corpus.txt";

std::vector<FlagSpec> train_flags() {
  std::vector<FlagSpec> specs = {
      {"model_name_or_path", "HF checkpoint directory to start from"},
      {"config_name", std::string("HF config.json of a fresh model (default ") + kDefaultConfig + ")"},
      {"data", std::string("token file: .npy .bin, or text: .txt .jsonl (default ") + kDefaultData + ")"},
      {"tokenizer_name", "HF tokenizer directory (tokenizer.json) for text data (default: the one in "
                         "--model_name_or_path; none: the byte tokenizer)"},
      {"seq_len", "tokens per training window (default 256)"},
      {"packing", "pack the documents of --data (each ending with EOS) into the windows, attention and "
                  "positions restarting at each document (default off: plain windows of the token stream)", true},
      {"eval_data", "token file evaluated every --eval_steps (eval_loss, eval_ppl in metrics.jsonl)"},
      {"validation_split_percentage", "hold out the first P% of --data's windows as the eval data"},
      {"save_dtype", "dtype of the exported model: float32 | bfloat16 | float16 (default: the checkpoint's, "
                     "float32 for a fresh model); training checkpoints keep fp32"},
      {"moe_capacity_factor", "MoE: each expert takes at most ceil(f * N * k / E) of a forward's N*k assignments, "
                              "the rest dropped and counted (default: config.json capacity_factor, 0 = dropless)"},
      {"args", "JSON file of TrainingArguments; flags override it (default job: " +
                   std::string(kDefaultArgs) + ")"},
  };
  for (auto& [name, help] : train::TrainingArguments::field_help()) specs.push_back({name, help});
  for (auto& spec : parallel_flag_specs()) specs.push_back(spec);
  return specs;
}

// The EOS id that ends each document for --packing: the tokenizer's, else config.json's.
int64_t packing_eos(const std::optional<std::filesystem::path>& tokenizer, const models::LlamaConfig& config) {
  std::optional<int64_t> eos = config.eos_token_id;
  if (tokenizer) {
    if (auto id = data::Tokenizer::load(*tokenizer).eos_id()) eos = *id;
  }
  if (!eos)
    throw UsageError("--packing needs the EOS id that ends each document: an eos_token in the tokenizer's "
                     "tokenizer_config.json or eos_token_id in config.json; neither is set");
  MT_CHECK(*eos >= 0 && *eos < config.vocab_size, "--packing: the EOS id ", *eos, " is outside the vocabulary [0, ",
           config.vocab_size, ")");
  return *eos;
}

}  // namespace

int run_train(const Args& argv) {
  Flags flags("train", train_flags(), argv);
  if (flags.help_requested()) {
    std::cout << flags.usage("[--config_name FILE | --model_name_or_path DIR] [--data PATH] [flags]");
    return 0;
  }
  if (!flags.positional().empty())
    throw UsageError("meshtrain train: unexpected argument '" + flags.positional()[0] + "'");
  if (flags.has("config_name") && flags.has("model_name_or_path"))
    throw UsageError("meshtrain train: give --config_name or --model_name_or_path, not both");
  const bool default_job = !flags.has("config_name") && !flags.has("model_name_or_path");

  train::TrainingArguments args;
  const bool eval_given = flags.has("eval_data") || flags.has("validation_split_percentage");
  if (flags.has("eval_data") && flags.has("validation_split_percentage"))
    throw UsageError("meshtrain train: give --eval_data or --validation_split_percentage, not both");
  // Eval data means evaluating, unless the arguments say eval_strategy no.
  if (eval_given) args.eval_strategy = train::EvalStrategy::Steps;
  std::string args_file = flags.get("args", default_job ? kDefaultArgs : "");
  if (!args_file.empty()) {
    args_file = resolve_path(args_file);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(util::read_file(args_file));
    } catch (const nlohmann::json::exception& e) {
      throw UsageError("meshtrain train: " + args_file + " is not valid JSON: " + e.what());
    }
    args.update_from_json(j, args_file);
  }
  for (auto& [name, value] : flags.given())
    if (train::TrainingArguments::has_field(name)) args.set(name, value);
  args.validate();
  const int64_t seq_len = flags.get_int("seq_len", 256);
  if (seq_len < 2) throw UsageError("meshtrain train: --seq_len must be at least 2, got " + std::to_string(seq_len));
  const auto packing_flag = flags.get("packing", "false");
  if (packing_flag != "true" && packing_flag != "false")
    throw UsageError("meshtrain train: --packing must be true or false, got '" + packing_flag + "'");
  const bool packing = packing_flag == "true";

  if (args.eval_strategy == train::EvalStrategy::Steps && !eval_given)
    throw UsageError("meshtrain train: --eval_strategy steps needs --eval_data or --validation_split_percentage");
  const auto options = parallel_options_from(flags);
  auto runtime = start_runtime_from(flags);
  set_flight_fallback_dir(args.output_dir);
  std::shared_ptr<parallel::ParallelModel> parallel_model;
  if (flags.has("model_name_or_path")) {
    parallel_model = parallel::load_pretrained_parallel(flags.require("model_name_or_path"), runtime.mesh, options);
  } else {
    auto model = std::make_shared<models::LlamaForCausalLM>(
        models::LlamaConfig::load(resolve_path(flags.get("config_name", kDefaultConfig))));
    parallel_model = std::make_shared<parallel::ParallelModel>(model, runtime.mesh, options);
    // Keyed by name over the global shape: every shard gets its slice of the serial init.
    model->init_weights(static_cast<uint64_t>(args.seed));
  }
  if (flags.has("save_dtype")) parallel_model->model().set_dtype(flags.get("save_dtype", ""));
  if (flags.has("moe_capacity_factor")) {
    const double factor = flags.get_double("moe_capacity_factor", 0.0);
    if (factor < 0) throw UsageError(str_cat("--moe_capacity_factor must be >= 0, got ", factor));
    MT_CHECK(!parallel_model->model().moe_layers().empty(), "--moe_capacity_factor: the model has no MoE layers");
    for (auto& layer : parallel_model->model().moe_layers()) layer->set_capacity_factor(factor);
  }
  if (runtime.env.rank == 0) report_tp_plan(*parallel_model);

  const auto tokenizer = tokenizer_from(flags);
  const int64_t vocab_size = parallel_model->model().config().vocab_size;
  auto dataset = open_data(resolve_path(flags.get("data", kDefaultData)), tokenizer, runtime, vocab_size);
  const data::TokenDataset* train_data = dataset.get();
  std::unique_ptr<data::TokenDataset> eval_file;
  data::ValidationSplit split;
  if (flags.has("eval_data")) eval_file = open_data(resolve_path(flags.get("eval_data", "")), tokenizer, runtime, vocab_size);
  if (flags.has("validation_split_percentage")) {
    split = data::split_validation(*dataset, seq_len, flags.get_double("validation_split_percentage", 0.0));
    train_data = split.train.get();
  }
  train::Trainer trainer(parallel_model, *train_data, seq_len, args);
  if (packing) trainer.packing_eos_token_id = packing_eos(tokenizer, parallel_model->model().config());
  trainer.eval_data = eval_file ? eval_file.get() : split.eval.get();
  trainer.resume_if_possible = runtime.env.restart > 0;  // launch --max_restarts, or torchrun's
  trainer.train();
  if (tokenizer && runtime.env.rank == 0 && !trainer.preempted()) save_tokenizer(*tokenizer, args.output_dir);
  return 0;
}

}  // namespace meshtrain::tools

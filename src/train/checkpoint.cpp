#include "train/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>

#include <regex>

#include "io/safetensors.h"
#include "models/hf_weights.h"
#include "util/check.h"
#include "util/files.h"

namespace meshtrain::train {

namespace fs = std::filesystem;

namespace {

const std::regex kCheckpointName(R"(checkpoint-(\d+))");

}  // namespace

fs::path save_training_checkpoint(const fs::path& output_dir, const models::LlamaForCausalLM& model,
                                  const AdamW& optimizer, const TrainerState& state) {
  const auto name = "checkpoint-" + std::to_string(state.global_step);
  const auto final_dir = output_dir / name;
  const auto tmp_dir = output_dir / ("." + name + ".tmp");
  fs::remove_all(tmp_dir);
  fs::create_directories(tmp_dir);

  models::save_hf_checkpoint(model, tmp_dir);
  io::save_safetensors(tmp_dir / "optimizer.safetensors", optimizer.state_tensors());
  auto rng = at::detail::getDefaultCPUGenerator().get_state();
  io::save_safetensors(tmp_dir / "rng_state.safetensors", {{"cpu", rng}});
  nlohmann::json j = {{"global_step", state.global_step},
                      {"data_position", state.data_position},
                      {"args", state.args}};
  util::write_file_atomic(tmp_dir / "trainer_state.json", j.dump(2) + "\n");
  util::sync_path(tmp_dir);

  // Swap in: an older checkpoint of the same step is moved aside first, removed last.
  const auto old_dir = output_dir / ("." + name + ".old");
  fs::remove_all(old_dir);
  if (fs::exists(final_dir)) fs::rename(final_dir, old_dir);
  fs::rename(tmp_dir, final_dir);
  util::sync_path(output_dir);
  fs::remove_all(old_dir);
  return final_dir;
}

TrainerState load_training_checkpoint(const fs::path& dir, models::LlamaForCausalLM& model,
                                      AdamW& optimizer) {
  MT_CHECK(fs::is_directory(dir), "checkpoint directory ", dir, " does not exist");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(util::read_file(dir / "trainer_state.json"));
    TrainerState state{j.at("global_step").get<int64_t>(), j.at("data_position").get<int64_t>(),
                       j.value("args", nlohmann::json::object())};
    MT_CHECK(state.global_step >= 0 && state.data_position >= 0, dir,
             "/trainer_state.json: negative step or data position");
    models::load_hf_weights(model, io::CheckpointReader(dir));
    io::SafetensorsFile opt(dir / "optimizer.safetensors");
    optimizer.load_state_tensors([&](const std::string& name) {
      MT_CHECK(opt.contains(name), dir, "/optimizer.safetensors has no tensor ", name);
      return opt.read(name);
    });
    io::SafetensorsFile rng(dir / "rng_state.safetensors");
    auto generator = at::detail::getDefaultCPUGenerator();
    generator.set_state(rng.read("cpu"));
    return state;
  } catch (const nlohmann::json::exception& e) {
    fail(dir.string(), "/trainer_state.json is malformed: ", e.what());
  }
}

std::optional<fs::path> latest_checkpoint(const fs::path& output_dir) {
  std::optional<fs::path> best;
  int64_t best_step = -1;
  if (!fs::is_directory(output_dir)) return best;
  for (auto& entry : fs::directory_iterator(output_dir)) {
    std::smatch m;
    auto name = entry.path().filename().string();
    if (entry.is_directory() && std::regex_match(name, m, kCheckpointName) && std::stoll(m[1]) > best_step) {
      best_step = std::stoll(m[1]);
      best = entry.path();
    }
  }
  return best;
}

}  // namespace meshtrain::train

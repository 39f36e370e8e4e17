#include "tools/text_data.h"

#include <thread>

#include "data/tokenized_text.h"
#include "dist/device_mesh.h"
#include "dist/failure_board.h"
#include "util/check.h"

namespace meshtrain::tools {

namespace fs = std::filesystem;

std::optional<fs::path> tokenizer_from(const Flags& flags) {
  if (flags.has("tokenizer_name")) return fs::path(resolve_path(flags.get("tokenizer_name", "")));
  if (flags.has("model_name_or_path")) {
    const fs::path dir = resolve_path(flags.get("model_name_or_path", ""));
    if (fs::exists(dir / "tokenizer.json")) return dir;
  }
  return std::nullopt;
}

std::unique_ptr<data::TokenDataset> open_data(const fs::path& data, const std::optional<fs::path>& tokenizer,
                                              const dist::Runtime& runtime, int64_t vocab_size) {
  if (!tokenizer || !data::is_text_data(data)) return data::open_token_dataset(data);
  const auto encoder = data::Tokenizer::load(*tokenizer);
  MT_CHECK(encoder.vocab_size() <= vocab_size, "the tokenizer ", *tokenizer, " has ", encoder.vocab_size(),
           " ids, more than the model's vocab_size ", vocab_size);
  const int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  dist::collective_check(runtime.mesh->group(MeshDim::World), [&] {
    if (runtime.env.local_rank == 0) data::tokenize_once(encoder, data, *tokenizer, threads);
  });
  return data::open_token_dataset(data::tokenized_path(data, *tokenizer));
}

void save_tokenizer(const fs::path& tokenizer, const fs::path& model_dir) {
  const fs::path dir = fs::is_directory(tokenizer) ? tokenizer : tokenizer.parent_path();
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}) {
    const fs::path from = name == std::string("tokenizer.json") && !fs::is_directory(tokenizer) ? tokenizer : dir / name;
    if (fs::exists(from) && !fs::equivalent(dir, model_dir))
      fs::copy_file(from, model_dir / name, fs::copy_options::overwrite_existing);
  }
}

}  // namespace meshtrain::tools

#include "tools/layout_catalog.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <memory>

#include "models/llama.h"
#include "parallel/parallelize.h"
#include "util/check.h"
#include "util/error_text.h"

namespace meshtrain::tools {

namespace {

constexpr const char* kGrammar =
    "a layout is 'single' or terms dp_replicateN, dp_shardN, cpN, spN, tpN, epN joined by 'x', then options "
    "+sp (Megatron sequence parallelism) and +ep_allreduce, e.g. dp_shard2xtp2+sp";

// The dims of a name, in mesh order (ep last), with their fields.
struct Dim {
  const char* name;
  int64_t Layout::*size;
};
constexpr std::array<Dim, 6> kDims = {{{"dp_replicate", &Layout::dp_replicate},
                                       {"dp_shard", &Layout::dp_shard},
                                       {"cp", &Layout::cp},
                                       {"sp", &Layout::sp},
                                       {"tp", &Layout::tp},
                                       {"ep", &Layout::ep}}};
constexpr std::array<const char*, 6> kFlags = {"--dp_replicate_size", "--dp_shard_size", "--cp_size",
                                               "--sp_size",           "--tp_size",       "--ep_size"};

[[noreturn]] void bad_name(const std::string& name, const std::string& why) {
  throw UsageError(str_cat("layout '", name, "': ", why, " (", kGrammar, ")"));
}

void parse_term(const std::string& name, const std::string& term, Layout& out, std::vector<std::string>& seen) {
  const auto digits = term.find_first_of("0123456789");
  const std::string dim = term.substr(0, digits);
  const auto it = std::find_if(kDims.begin(), kDims.end(), [&](const Dim& d) { return dim == d.name; });
  if (it == kDims.end()) bad_name(name, "unknown dimension '" + dim + "'");
  if (digits == std::string::npos) bad_name(name, "'" + dim + "' needs a size, as " + dim + "2");
  if (std::find(seen.begin(), seen.end(), dim) != seen.end()) bad_name(name, "'" + dim + "' is given twice");
  seen.push_back(dim);
  int64_t size = 0;
  const char* first = term.data() + digits;
  const char* last = term.data() + term.size();
  auto [end, ec] = std::from_chars(first, last, size);
  if (ec != std::errc() || end != last || size < 1 || size > 1'000'000)
    bad_name(name, "'" + term + "' is not " + dim + " followed by a positive size");
  out.*(it->size) = size;
}

// Every ordered factorisation of n into `parts` factors (each >= 1).
void factorisations(int64_t n, size_t parts, std::vector<int64_t>& prefix, std::vector<std::vector<int64_t>>& out) {
  if (prefix.size() + 1 == parts) {
    prefix.push_back(n);
    out.push_back(prefix);
    prefix.pop_back();
    return;
  }
  for (int64_t d = n; d >= 1; --d) {  // outer dims large first: dp_replicate2 before tp2
    if (n % d != 0) continue;
    prefix.push_back(d);
    factorisations(n / d, parts, prefix, out);
    prefix.pop_back();
  }
}

}  // namespace

std::string Layout::name() const {
  std::string out;
  for (auto& d : kDims) {
    if (this->*(d.size) == 1) continue;
    if (!out.empty()) out += 'x';
    out += d.name + std::to_string(this->*(d.size));
  }
  if (out.empty()) out = "single";
  if (sequence_parallel) out += "+sp";
  if (ep > 1 && ep_mode == parallel::EpMode::AllReduce) out += "+ep_allreduce";
  return out;
}

std::vector<std::string> Layout::flags() const {
  std::vector<std::string> out;
  for (size_t i = 0; i < kDims.size(); ++i)
    if (this->*(kDims[i].size) != 1) {
      out.push_back(kFlags[i]);
      out.push_back(std::to_string(this->*(kDims[i].size)));
    }
  if (sequence_parallel) out.push_back("--sequence_parallel");
  if (ep > 1 && ep_mode == parallel::EpMode::AllReduce) {
    out.push_back("--ep_mode");
    out.push_back("allreduce");
  }
  return out;
}

dist::MeshSizes Layout::mesh_sizes() const {
  dist::MeshSizes s;
  s.dp_replicate = dp_replicate;
  s.dp_shard = dp_shard;
  s.cp = cp;
  s.sp = sp;
  s.tp = tp;
  s.ep = ep;
  s.ep_in_tp = ep > 1 && ep_mode == parallel::EpMode::AllReduce;
  return s;
}

parallel::ParallelOptions Layout::options(parallel::ParallelOptions base) const {
  base.sequence_parallel = sequence_parallel;
  base.ep_size = ep;
  base.ep_mode = ep > 1 ? ep_mode : parallel::EpMode::AllToAll;
  return base;
}

Layout parse_layout(const std::string& name) {
  Layout out;
  const auto plus = name.find('+');
  const std::string base = name.substr(0, plus);
  if (base.empty()) bad_name(name, "no dimensions");
  if (base != "single") {
    std::vector<std::string> seen;
    size_t start = 0;
    while (true) {
      const auto x = base.find('x', start);
      const std::string term = base.substr(start, x == std::string::npos ? std::string::npos : x - start);
      if (term.empty()) bad_name(name, "an empty term");
      parse_term(name, term, out, seen);
      if (x == std::string::npos) break;
      start = x + 1;
    }
  }
  for (size_t at = plus; at != std::string::npos;) {
    const auto next = name.find('+', at + 1);
    const std::string option = name.substr(at + 1, next == std::string::npos ? std::string::npos : next - at - 1);
    if (option == "sp" && !out.sequence_parallel) {
      out.sequence_parallel = true;
    } else if (option == "ep_allreduce" && out.ep_mode != parallel::EpMode::AllReduce) {
      out.ep_mode = parallel::EpMode::AllReduce;
    } else {
      bad_name(name, "unknown or repeated option '+" + option + "'");
    }
    at = next;
  }
  if (out.sequence_parallel && out.tp == 1) bad_name(name, "+sp (sequence parallelism) needs tp2 or more");
  if (out.ep_mode == parallel::EpMode::AllReduce && out.ep == 1) bad_name(name, "+ep_allreduce needs ep2 or more");
  return out;
}

std::optional<std::string> layout_problem(const models::LlamaConfig& config, const Layout& layout, int64_t seq_len) {
  try {
    // The checks train makes, on a mesh without backends as `meshtrain plan` lays models out.
    const auto sizes = dist::resolve_mesh_sizes(layout.mesh_sizes(), layout.world());
    auto mesh = std::make_shared<dist::DeviceMesh>(sizes, 0);
    mesh->create_layout_groups();
    auto model = std::make_shared<models::LlamaForCausalLM>(config);
    parallel::ParallelModel laid_out(model, mesh, layout.options());
    if (seq_len > 0) laid_out.check_sequence_length(seq_len);
  } catch (const std::exception& e) {
    return util::without_stack_frames(e.what());
  }
  return std::nullopt;
}

std::vector<Layout> valid_layouts(const models::LlamaConfig& config, int64_t world, int64_t seq_len) {
  MT_CHECK(world >= 1, "valid_layouts: world size must be positive, got ", world);
  std::vector<std::vector<int64_t>> meshes;
  std::vector<int64_t> prefix;
  factorisations(world, 5, prefix, meshes);
  std::vector<Layout> out;
  for (auto& m : meshes) {
    Layout base;
    base.dp_replicate = m[0], base.dp_shard = m[1], base.cp = m[2], base.sp = m[3], base.tp = m[4];
    std::vector<Layout> candidates;
    for (bool sequence_parallel : {false, true}) {
      if (sequence_parallel && base.tp == 1) continue;
      Layout l = base;
      l.sequence_parallel = sequence_parallel;
      candidates.push_back(l);
      if (!config.moe) continue;
      for (int64_t ep = 2; ep <= world; ++ep) {  // which ep each mode admits is the mesh's rule
        for (auto mode : {parallel::EpMode::AllToAll, parallel::EpMode::AllReduce}) {
          Layout e = l;
          e.ep = ep;
          e.ep_mode = mode;
          candidates.push_back(e);
        }
      }
    }
    for (auto& c : candidates)
      if (!layout_problem(config, c, seq_len)) out.push_back(c);
  }
  return out;
}

}  // namespace meshtrain::tools

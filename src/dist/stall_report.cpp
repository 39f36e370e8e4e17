#include "dist/stall_report.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <thread>

#include "util/check.h"

namespace meshtrain::dist {

std::string describe_stall(Group& g) {
  c10d::Store* store = g.stall_store();
  const uint64_t mine = g.ops_issued();
  if (!store) return str_cat("operation #", mine, " of this group");
  std::map<int, uint64_t> issued;
  try {
    const auto text = std::to_string(mine);
    store->set("issued/" + std::to_string(g.global_rank()), std::vector<uint8_t>(text.begin(), text.end()));
    // The members stalled in this collective time out at about the same moment.
    const auto deadline = std::chrono::steady_clock::now() + std::min<std::chrono::milliseconds>(g.timeout(), std::chrono::seconds(3));
    do {
      for (int r : g.ranks()) {
        const auto key = "issued/" + std::to_string(r);
        if (issued.contains(r) || !store->check({key})) continue;
        const auto v = store->get(key);
        issued[r] = std::stoull(std::string(v.begin(), v.end()));
      }
      if (issued.size() == g.ranks().size()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    } while (std::chrono::steady_clock::now() < deadline);
  } catch (const std::exception& e) {
    return str_cat("operation #", mine, " of this group (the store is unreachable: ", e.what(), ")");
  }
  std::string behind, silent;
  for (int r : g.ranks()) {
    auto it = issued.find(r);
    if (it == issued.end())
      silent += (silent.empty() ? "" : ", ") + std::to_string(r);
    else if (it->second < mine)
      behind += str_cat(behind.empty() ? "" : "; ", "rank ", r, " has issued only ", it->second);
  }
  std::string out = str_cat("operation #", mine, " of this group");
  if (!behind.empty()) out += ": " + behind;
  if (!silent.empty())
    out += str_cat(behind.empty() ? ": " : "; ", "rank(s) ", silent,
                   " did not answer (stopped, or stuck outside this group)");
  if (behind.empty() && silent.empty()) out += ": every rank reached it";
  return out;
}

}  // namespace meshtrain::dist

#include "tools/flight_diagnosis.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>

#include "util/check.h"

namespace meshtrain::tools {

namespace {

std::string list(const std::vector<int>& ranks) {
  std::string out;
  for (int r : ranks) {
    if (!out.empty()) out += ',';
    out += std::to_string(r);
  }
  return out;
}

std::string ranks_text(const std::vector<int>& ranks) {
  return (ranks.size() == 1 ? "rank " : "ranks ") + list(ranks);
}

std::string describe(const FlightOp& op) {
  std::string shape;
  for (auto d : op.shape) {
    if (!shape.empty()) shape += ", ";
    shape += std::to_string(d);
  }
  return str_cat(op.op, " [", shape, "] ", op.dtype);
}

std::string fixed1(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

// Send and recv pair up across ranks at the same number; other ops must be the same everywhere,
// and the same shape where the backend needs equal inputs (not all_to_all's uneven splits).
bool matches(const FlightOp& a, const FlightOp& b) {
  auto p2p = [](const std::string& op) { return op == "send" || op == "recv"; };
  if (p2p(a.op) && p2p(b.op)) return true;
  if (a.op != b.op) return false;
  if (a.op == "all_to_all") return a.dtype == b.dtype;
  return a.shape == b.shape && a.dtype == b.dtype;
}

// One rank's view of one group.
struct Member {
  const FlightRecord* record;
  uint64_t issued;
  std::map<uint64_t, const FlightOp*> ops;  // by sequence number, what the ring still holds
};

const FlightOp* oldest_in_flight(const FlightRecord& r) {
  for (auto& op : r.ops)
    if (!op.end) return &op;
  return nullptr;
}

struct Finding {
  double when;  // the start of the operation it is about: the oldest is the likeliest cause
  std::string line;
};

// Ranks behind the others on a group: the first number each never entered, who entered it, and
// where the laggard is instead.
void find_laggards(const std::string& name, const std::vector<Member>& members, std::vector<Finding>& out) {
  uint64_t top = 0;
  for (auto& m : members) top = std::max(top, m.issued);
  std::map<uint64_t, std::vector<const Member*>> behind;  // first seq not entered -> ranks
  for (auto& m : members)
    if (m.issued < top) behind[m.issued + 1].push_back(&m);
  for (auto& [seq, lagging] : behind) {
    std::vector<int> entered;
    const FlightOp* op = nullptr;
    for (auto& m : members) {
      if (m.issued < seq) continue;
      entered.push_back(m.record->rank);
      if (auto it = m.ops.find(seq); it != m.ops.end() && (!op || it->second->start < op->start)) op = it->second;
    }
    std::string line = str_cat("group ", name, " seq ", seq, ": ", ranks_text(entered), " entered ",
                               op ? describe(*op) : std::string("it (no longer in their records)"));
    for (auto* m : lagging) {
      line += str_cat("; rank ", m->record->rank, " never entered");
      std::string where;
      if (auto it = m->ops.find(m->issued); it != m->ops.end())
        where = str_cat("its last on this group: seq ", m->issued, " ", it->second->op);
      else
        where = m->issued == 0 ? "it issued nothing on this group" : str_cat("its last on this group: seq ", m->issued);
      if (auto* waiting = oldest_in_flight(*m->record); waiting && waiting->group != name)
        where += str_cat("; it is waiting in group ", waiting->group, " seq ", waiting->seq, " ", waiting->op);
      line += " (" + where + ")";
    }
    out.push_back({op ? op->start : 0.0, line});
  }
}

// The first number at which members entered different operations.
void find_mismatch(const std::string& name, const std::vector<Member>& members, std::vector<Finding>& out) {
  std::set<uint64_t> seqs;
  for (auto& m : members)
    for (auto& [seq, op] : m.ops) seqs.insert(seq);
  for (uint64_t seq : seqs) {
    std::vector<std::pair<int, const FlightOp*>> at;
    for (auto& m : members)
      if (auto it = m.ops.find(seq); it != m.ops.end()) at.emplace_back(m.record->rank, it->second);
    if (at.size() < 2) continue;
    const bool same = std::all_of(at.begin(), at.end(), [&](auto& p) { return matches(*at[0].second, *p.second); });
    if (same) continue;
    std::string line = str_cat("mismatched collective order: group ", name, " seq ", seq, ":");
    double when = at[0].second->start;
    for (size_t i = 0; i < at.size(); ++i) {
      line += str_cat(i ? ", rank " : " rank ", at[i].first, " ", describe(*at[i].second));
      when = std::min(when, at[i].second->start);
    }
    out.push_back({when, line});
    return;  // what follows is a consequence
  }
}

// Members without a record, on a group where a recorded member is waiting.
void find_silent(const std::string& name, const std::vector<Member>& members, const std::vector<int>& silent,
                 std::vector<Finding>& out) {
  if (silent.empty()) return;
  const FlightOp* waiting = nullptr;
  std::vector<int> entered;
  for (auto& m : members)
    for (auto& [seq, op] : m.ops)
      if (!op->end && (!waiting || seq < waiting->seq)) waiting = op;
  if (!waiting) return;
  for (auto& m : members)
    if (m.ops.contains(waiting->seq)) entered.push_back(m.record->rank);
  out.push_back({waiting->start, str_cat("group ", name, " seq ", waiting->seq, ": ", ranks_text(entered), " entered ",
                                         describe(*waiting), "; ", ranks_text(silent),
                                         " wrote no record (stopped, or hung outside a collective)")});
}

std::string rank_line(const FlightRecord& r) {
  std::string line = str_cat("rank ", r.rank, ": last completed step ", r.last_step, "; ");
  if (auto* op = oldest_in_flight(r))
    line += str_cat("waiting in group ", op->group, " seq ", op->seq, " ", describe(*op), " for ",
                    fixed1(std::max(0.0, r.time - op->start)), " s");
  else
    line += "no collective in flight";
  if (!r.reason.empty()) line += " (record written on " + r.reason + ")";
  return line;
}

}  // namespace

FlightRecord parse_flight_record(const nlohmann::json& j) {
  try {
    FlightRecord r;
    r.rank = j.at("rank").get<int>();
    r.reason = j.value("reason", "");
    r.time = j.at("time").get<double>();
    r.last_step = j.at("last_step").get<int64_t>();
    for (auto& g : j.at("groups"))
      r.groups.push_back({g.at("name").get<std::string>(), g.at("ranks").get<std::vector<int>>(),
                          g.at("issued").get<uint64_t>()});
    for (auto& e : j.at("entries")) {
      FlightOp op;
      op.group = e.at("group").get<std::string>();
      op.seq = e.at("seq").get<uint64_t>();
      op.op = e.at("op").get<std::string>();
      op.shape = e.at("shape").get<std::vector<int64_t>>();
      op.dtype = e.at("dtype").get<std::string>();
      op.bytes = e.at("bytes").get<uint64_t>();
      op.start = e.at("start").get<double>();
      if (e.at("end").is_number()) op.end = e.at("end").get<double>();
      r.ops.push_back(std::move(op));
    }
    return r;
  } catch (const nlohmann::json::exception& e) {
    fail("not a flight record: ", e.what());
  }
}

bool any_in_flight(const std::vector<FlightRecord>& records) {
  return std::any_of(records.begin(), records.end(), [](auto& r) { return oldest_in_flight(r) != nullptr; });
}

std::vector<std::string> diagnose_flights(const std::vector<FlightRecord>& records, const std::vector<int>& expected) {
  std::map<int, const FlightRecord*> by_rank;
  for (auto& r : records) by_rank[r.rank] = &r;
  std::vector<int> missing;
  for (int r : expected)
    if (!by_rank.contains(r)) missing.push_back(r);
  std::sort(missing.begin(), missing.end());

  // A group is its name and its members: the dp_shard groups of different replicas are different.
  std::map<std::pair<std::string, std::vector<int>>, std::vector<Member>> groups;
  for (auto& [rank, record] : by_rank)
    for (auto& g : record->groups) {
      Member m{record, g.issued, {}};
      for (auto& op : record->ops)
        if (op.group == g.name) m.ops[op.seq] = &op;
      groups[{g.name, g.ranks}].push_back(std::move(m));
    }
  std::vector<Finding> findings;
  for (auto& [key, members] : groups) {
    std::vector<int> silent;
    for (int r : key.second)
      if (std::binary_search(missing.begin(), missing.end(), r)) silent.push_back(r);
    find_laggards(key.first, members, findings);
    find_mismatch(key.first, members, findings);
    find_silent(key.first, members, silent, findings);
  }
  std::stable_sort(findings.begin(), findings.end(), [](auto& a, auto& b) { return a.when < b.when; });

  std::vector<std::string> lines;
  if (!missing.empty())
    lines.push_back(ranks_text(missing) + " wrote no record (stopped, or hung outside a collective)");
  for (auto& f : findings) lines.push_back(f.line);
  if (findings.empty() && !records.empty()) lines.push_back("every rank entered the same collectives");
  for (auto& [rank, record] : by_rank) lines.push_back(rank_line(*record));
  return lines;
}

}  // namespace meshtrain::tools

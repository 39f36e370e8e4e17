// What the ranks' flight records (dist/flight_recorder.h) say about a stall: per group and sequence
// number, the ranks that never entered an operation others entered, the ranks that entered a
// different one (a mismatched collective order), the ranks that left no record, and each rank's
// last completed step. A pure function of the records, so it is tested on hand-made ones.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace meshtrain::tools {

struct FlightOp {
  std::string group, op, dtype;
  uint64_t seq = 0;
  std::vector<int64_t> shape;
  uint64_t bytes = 0;
  double start = 0;
  std::optional<double> end;  // none: not finished
};

struct FlightGroup {
  std::string name;
  std::vector<int> ranks;
  uint64_t issued = 0;  // the highest sequence number this rank issued on it
};

struct FlightRecord {
  int rank = 0;
  std::string reason;
  double time = 0;  // when it was written (Unix time)
  int64_t last_step = 0;
  std::vector<FlightGroup> groups;
  std::vector<FlightOp> ops;  // oldest first
};

// A record as FlightRecorder::to_json writes it; an Error naming what is missing or malformed.
FlightRecord parse_flight_record(const nlohmann::json& j);

// The diagnosis, one finding a line; `expected` are the ranks whose records were asked for (those
// without one are named). Findings come oldest first, then one line per rank.
std::vector<std::string> diagnose_flights(const std::vector<FlightRecord>& records, const std::vector<int>& expected);

// Whether any record holds an operation that did not finish: a failure worth diagnosing.
bool any_in_flight(const std::vector<FlightRecord>& records);

}  // namespace meshtrain::tools

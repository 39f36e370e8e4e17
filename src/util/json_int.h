// An integer read from untrusted JSON: a JSON integer within int64, or a float with an integral
// value in range (1e3 for 1000); anything else throws naming `what`. nlohmann's get<int64_t>()
// converts an out-of-range float with undefined behaviour.
#pragma once
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "util/check.h"

namespace meshtrain::util {

inline int64_t json_int(const nlohmann::json& v, const std::string& what) {
  if (v.is_number_unsigned()) {
    MT_CHECK(v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), what, " ", v.dump(),
             " is out of range");
    return static_cast<int64_t>(v.get<uint64_t>());
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    MT_CHECK(std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.2e18, what, " ", v.dump(),
             " is not an integer in range");
    return static_cast<int64_t>(d);
  }
  fail(what, " has the wrong type: ", v.dump(), " is not an integer");
}

inline std::vector<int64_t> json_ints(const nlohmann::json& v, const std::string& what) {
  MT_CHECK(v.is_array(), what, " has the wrong type: ", v.dump(), " is not an array of integers");
  std::vector<int64_t> out;
  for (auto& x : v) out.push_back(json_int(x, what));
  return out;
}

}  // namespace meshtrain::util

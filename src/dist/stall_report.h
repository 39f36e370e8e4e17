// What a rank whose collective timed out can say about the others: each member of the group that
// also stalls leaves its count of operations issued on the group in the store, and the ranks that
// are behind it, or that leave nothing (stopped, or stuck outside this group), are named.
#pragma once
#include <string>

#include "dist/group.h"

namespace meshtrain::dist {

// "operation #57 of this group: rank 1 has issued only 56; rank 3 did not answer (stopped, or
// stuck outside this group)". Waits a few seconds for the others' counts.
std::string describe_stall(Group& g);

}  // namespace meshtrain::dist

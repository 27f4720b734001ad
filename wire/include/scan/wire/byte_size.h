// How byte sizes are written on every command line of the project (scan-server's flags and
// environment, scan-client, scan-bench): a plain integer or one with a binary suffix, "4096",
// "64Ki", "256Mi", "2Gi".
#pragma once

#include <cstdint>
#include <string>

namespace scan::wire {

// Parses `text` into *bytes (>= 0); false, leaving *bytes alone, on anything else, including a
// value that overflows 64 bits.
bool parse_byte_size(const std::string& text, std::int64_t* bytes);

}  // namespace scan::wire

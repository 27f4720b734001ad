#include "scan/wire/transport.h"

#include <grpc/grpc.h>
#include <malloc.h>

#include <cerrno>
#include <climits>
#include <cstdlib>

namespace scan::transport {

ChannelArgs tuned_channel_args() {
  return {
      // A fixed 64 MiB stream window instead of BDP probing, which starts at 64 KiB and needs
      // several round trips to open up: a large tensor on a new connection over a link with a
      // real round-trip time goes at full speed at once. On loopback it measures the same as the
      // defaults; so did larger read chunks and write buffers, while a larger minimum read chunk
      // was slower for small messages (bench/RESULTS.md, "Transport and service overhead").
      {GRPC_ARG_HTTP2_BDP_PROBE, 0},
      {GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 << 20},
  };
}

void keep_buffers_on_heap() {
  // 32 MiB is the most glibc accepts for the threshold; setting it also stops glibc's own dynamic
  // adjustment. Free heap above 128 MiB still goes back to the system.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 128 << 20);
}

bool parse_channel_arg(const std::string& text, ChannelArgs* args) {
  const auto equals = text.find('=');
  if (equals == std::string::npos || equals == 0 || equals + 1 == text.size()) return false;
  const std::string value = text.substr(equals + 1);
  char* end = nullptr;
  errno = 0;
  const long parsed = std::strtol(value.c_str(), &end, 0);
  if (*end != '\0' || errno != 0 || parsed < INT_MIN || parsed > INT_MAX) return false;
  args->emplace_back(text.substr(0, equals), static_cast<int>(parsed));
  return true;
}

}  // namespace scan::transport

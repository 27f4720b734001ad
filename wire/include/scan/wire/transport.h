// gRPC transport settings shared by the service and its clients: the channel arguments and the
// allocator setting that large tensors need. bench/RESULTS.md ("Transport and service overhead")
// has the measurements behind each choice.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace scan::transport {

// Integer channel arguments, applied in order (a later one overrides an earlier one).
using ChannelArgs = std::vector<std::pair<std::string, int>>;

// What both server and client set on top of the message-size limits.
ChannelArgs tuned_channel_args();

// Keeps gRPC's read buffers (up to several MiB each, one per read) and message-sized allocations
// up to 32 MiB on the heap instead of fresh mmaps: glibc would otherwise map, page-fault and unmap
// them on every large message, which took ~40% of a 64 MiB echo. Process-wide (mallopt); the
// server calls it from configure_transport, load generators at startup. Idempotent.
void keep_buffers_on_heap();

// Parses "name=integer" (as the benchmark tools' --channel-arg takes it).
bool parse_channel_arg(const std::string& text, ChannelArgs* args);

}  // namespace scan::transport

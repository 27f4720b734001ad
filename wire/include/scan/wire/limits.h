// Defaults of the transport's size limits, shared by the server's configuration, the admission
// limits it configures, and the bench echo server that must accept what scan-server accepts.
#pragma once

#include <cstdint>

namespace scan::wire {

// Largest tensor a request may carry (--max-tensor-bytes).
inline constexpr std::int64_t kDefaultMaxTensorBytes = std::int64_t{256} << 20;
// Room for a message's other fields: the default message limit is the largest tensor plus this.
inline constexpr std::int64_t kMessageOverheadBytes = std::int64_t{1} << 20;
// Size of the result chunks ScanStream sends (--stream-chunk-bytes).
inline constexpr std::int64_t kDefaultStreamChunkBytes = std::int64_t{4} << 20;

}  // namespace scan::wire

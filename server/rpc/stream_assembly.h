// Reassembles the tensor of a ScanStream call from the client's messages: first the header, then
// chunks of the tensor's bytes, counted against what the header's shape and dtype need. The
// messages come from the network, so each is checked before it is trusted, and a conversation out
// of order ends in INVALID_ARGUMENT naming what was wrong.
#pragma once

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/status.h>

#include <cstddef>
#include <string>

#include "scan/v1/scan.pb.h"

namespace scan::server {

// Parses the first message of a stream, which must be a ScanStreamRequest with its header set.
grpc::Status parse_stream_header(grpc::ByteBuffer* message, v1::ScanRequest* header);

class StreamAssembler {
 public:
  // Collects `expected_bytes` into *buffer (cleared first; reserve its capacity beforehand to
  // avoid reallocation).
  StreamAssembler(std::string* buffer, std::size_t expected_bytes);

  // Takes one more message: it must be a chunk that does not take the tensor beyond its size.
  grpc::Status add(grpc::ByteBuffer* message);
  // After the client closed its side: OK only if every byte arrived.
  grpc::Status finish() const;

  std::size_t received_bytes() const { return buffer_->size(); }

 private:
  grpc::Status too_many_bytes(std::size_t chunk_bytes) const;

  std::string* buffer_;
  const std::size_t expected_bytes_;
  std::size_t messages_ = 0;
};

}  // namespace scan::server

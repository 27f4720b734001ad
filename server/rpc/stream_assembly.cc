#include "rpc/stream_assembly.h"

#include <fmt/format.h>

#include "rpc/outcome_status.h"
#include "scan/wire/codec.h"

namespace scan::server {
namespace {

grpc::Status invalid(std::string message) {
  return to_status(Outcome::invalid(std::move(message)));
}

constexpr int kChunkField = v1::ScanStreamRequest::kChunkFieldNumber;

}  // namespace

grpc::Status parse_stream_header(grpc::ByteBuffer* message, v1::ScanRequest* header) {
  v1::ScanStreamRequest first;
  if (!wire::decode(message, &first).ok()) {
    return invalid("header: the first message is not a valid scan.v1.ScanStreamRequest");
  }
  if (first.part_case() != v1::ScanStreamRequest::kHeader) {
    return invalid(
        "header: the first message of a ScanStream must be its header; chunks follow the "
        "server's `accepted`");
  }
  header->Swap(first.mutable_header());
  return grpc::Status::OK;
}

StreamAssembler::StreamAssembler(std::string* buffer, std::size_t expected_bytes)
    : buffer_(buffer), expected_bytes_(expected_bytes) {
  buffer_->clear();
}

grpc::Status StreamAssembler::add(grpc::ByteBuffer* message) {
  ++messages_;
  const std::size_t before = buffer_->size();
  std::size_t chunk_bytes = 0;
  switch (wire::append_chunk(message, kChunkField, buffer_, expected_bytes_, &chunk_bytes)) {
    case wire::ChunkAppend::kAppended:
      return grpc::Status::OK;
    case wire::ChunkAppend::kOverflow:
      return too_many_bytes(chunk_bytes);
    case wire::ChunkAppend::kNotAChunk:
      break;
  }
  // Any other encoding protobuf allows (repeated fields, unknown fields, a header): parse it.
  v1::ScanStreamRequest parsed;
  if (!wire::decode(message, &parsed).ok()) {
    return invalid(
        fmt::format("chunk: message {} of the stream is not a valid "
                    "scan.v1.ScanStreamRequest",
                    messages_));
  }
  switch (parsed.part_case()) {
    case v1::ScanStreamRequest::kChunk: {
      const std::string& chunk = parsed.chunk();
      if (chunk.size() > expected_bytes_ - before) return too_many_bytes(chunk.size());
      buffer_->append(chunk);
      return grpc::Status::OK;
    }
    case v1::ScanStreamRequest::kHeader:
      return invalid(fmt::format(
          "header: message {} of the stream is a second header; only chunks may follow it",
          messages_));
    default:
      return invalid(
          fmt::format("part: message {} of the stream sets neither header nor chunk", messages_));
  }
}

grpc::Status StreamAssembler::too_many_bytes(std::size_t chunk_bytes) const {
  return invalid(fmt::format(
      "chunk: message {} ({} bytes) takes the tensor past the {} bytes that header.gamma's "
      "shape and dtype need ({} received before it)",
      messages_, chunk_bytes, expected_bytes_, buffer_->size()));
}

grpc::Status StreamAssembler::finish() const {
  if (buffer_->size() == expected_bytes_) return grpc::Status::OK;
  return invalid(fmt::format(
      "chunk: the stream ended after {} of the {} bytes that header.gamma's shape and dtype need",
      buffer_->size(), expected_bytes_));
}

}  // namespace scan::server

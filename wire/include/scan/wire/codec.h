// Serialises the two tensor-carrying messages of scan.v1 (ScanRequest, ScanResponse) into a
// grpc::ByteBuffer without copying the tensor bytes: protobuf's own serialiser would copy `data`
// into gRPC's slices, which for a 256 MiB tensor costs as much as a second trip through loopback.
// Here the bytes become one slice that owns the std::string they already live in, and only the
// few other fields are serialised. Client and server share this code, so both ends send the same
// wire bytes protobuf itself would (fields in order, canonical varints), just without the copy.
#pragma once

#include <google/protobuf/repeated_ptr_field.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/status.h>

#include <cstddef>
#include <memory>
#include <string>

#include "scan/v1/scan.pb.h"
#include "scan/wire/buffer_pool.h"

namespace scan::wire {

// Moves request->gamma().data() into the buffer (the request is left without it).
grpc::ByteBuffer encode_request(v1::ScanRequest* request);
// Sends `payload` as gamma's data (the request's own data must be empty) by reference, so that a
// load generator can send the same tensor again and again without copying it.
grpc::ByteBuffer encode_request(const v1::ScanRequest& request,
                                std::shared_ptr<const std::string> payload);
// Moves response->result().data() into the buffer (the response is left without it); once gRPC has
// sent it, the bytes go back to `pool` if there is one.
grpc::ByteBuffer encode_response(v1::ScanResponse* response,
                                 std::shared_ptr<BufferPool> pool = nullptr);

// Serialises `message` followed by one more length-delimited field `field_number` holding `*data`
// (moved out, sent by reference, back to `pool` once sent if there is one): for messages whose
// tensor bytes are a top-level `bytes` field, such as KServe's ModelInferResponse
// (raw_output_contents). Parsers accept fields in any order, and a repeated field's entries keep
// their order, so the payload is the field's last entry.
grpc::ByteBuffer encode_with_bytes_field(const google::protobuf::MessageLite& message,
                                         int field_number, std::string* data,
                                         std::shared_ptr<BufferPool> pool = nullptr);

// Serialises a message without tensor bytes of its own (e.g. ScanStream's headers).
grpc::ByteBuffer encode_message(const google::protobuf::MessageLite& message);

// Parses a buffer from the wire. Tensor bytes arrive in many slices of gRPC's read chunks and are
// copied once, into the contiguous string the kernels need; the other fields are parsed normally.
// Parsing keeps the capacity of the message's data string, so a buffer from a BufferPool put there
// first (`tensor_data`) is filled in place.
grpc::Status decode(grpc::ByteBuffer* buffer, google::protobuf::MessageLite* message);
// decode() into a pooled buffer placed as `*tensor_data` (the message's tensor data field).
grpc::Status decode(grpc::ByteBuffer* buffer, google::protobuf::MessageLite* message,
                    std::string* tensor_data, BufferPool* pool);

// decode() of a message whose tensor bytes are the first entry of a repeated `bytes` field `field`
// of it (KServe's raw_input_contents and raw_output_contents): that entry is parsed in place into
// a pooled buffer, which ends in *tensor_data whether or not the message had the entry (the entry
// is left empty). *entries is how many entries the field had.
grpc::Status decode_repeated(grpc::ByteBuffer* buffer, google::protobuf::MessageLite* message,
                             google::protobuf::RepeatedPtrField<std::string>* field,
                             std::string* tensor_data, BufferPool* pool, int* entries);

// The same behind a message already serialised (`head`).
grpc::ByteBuffer encode_with_bytes_field(std::string head, int field_number, std::string* data,
                                         std::shared_ptr<BufferPool> pool = nullptr);

// encode_with_bytes_field() of a payload shared by many messages (a load generator's tensor).
grpc::ByteBuffer encode_with_bytes_field(const google::protobuf::MessageLite& message,
                                         int field_number,
                                         std::shared_ptr<const std::string> payload);

// ScanStream's chunk messages (ScanStreamRequest.chunk, ScanStreamResponse.chunk) are a message
// holding one bytes field. These encode and decode them around protobuf, as above: the payload is
// sent by reference and received with one copy, straight into the tensor's buffer.

// A chunk message of field `field_number` whose payload is the `size` bytes at `data`, sent by
// reference: `owner` keeps them alive until gRPC has sent them.
grpc::ByteBuffer encode_chunk(int field_number, const char* data, std::size_t size,
                              std::shared_ptr<const void> owner);

enum class ChunkAppend {
  kAppended,   // the payload was appended to `out`
  kNotAChunk,  // not a plain chunk message of that field: parse it with protobuf instead
  kOverflow,   // the payload would take `out` beyond `limit` bytes; nothing appended
};
// Appends the payload of `message` to `out` if the message is exactly one field `field_number`,
// length-delimited (how every protobuf encoder writes a chunk message). Consumes the message
// unless it answers kNotAChunk. On kOverflow, *payload_bytes (when given) is the payload's size.
ChunkAppend append_chunk(grpc::ByteBuffer* message, int field_number, std::string* out,
                         std::size_t limit, std::size_t* payload_bytes = nullptr);

}  // namespace scan::wire

// Serialises the two tensor-carrying messages of scan.v1 (ScanRequest, ScanResponse) into a
// grpc::ByteBuffer without copying the tensor bytes: protobuf's own serialiser would copy `data`
// into gRPC's slices, which for a 256 MiB tensor costs as much as a second trip through loopback.
// Here the bytes become one slice that owns the std::string they already live in, and only the
// few other fields are serialised. Client and server share this code, so both ends send the same
// wire bytes protobuf itself would (fields in order, canonical varints), just without the copy.
#pragma once

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/status.h>

#include <memory>
#include <string>

#include "scan/v1/scan.pb.h"

namespace scan::wire {

// Moves request->gamma().data() into the buffer (the request is left without it).
grpc::ByteBuffer encode_request(v1::ScanRequest* request);
// Sends `payload` as gamma's data (the request's own data must be empty) by reference, so that a
// load generator can send the same tensor again and again without copying it.
grpc::ByteBuffer encode_request(const v1::ScanRequest& request,
                                std::shared_ptr<const std::string> payload);
// Moves response->result().data() into the buffer (the response is left without it).
grpc::ByteBuffer encode_response(v1::ScanResponse* response);

// Parses a buffer from the wire. Tensor bytes arrive in many slices of gRPC's read chunks and are
// copied once, into the contiguous string the kernels need; the other fields are parsed normally.
grpc::Status decode(grpc::ByteBuffer* buffer, google::protobuf::MessageLite* message);

}  // namespace scan::wire

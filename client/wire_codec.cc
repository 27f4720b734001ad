#include "wire_codec.h"

#include <grpc/slice.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/slice.h>

#include <cstdint>
#include <string>
#include <utility>

namespace scan::wire {
namespace {

// Tag bytes of the length-delimited fields this codec writes itself: field 1 of both messages is
// the tensor (ScanRequest.gamma, ScanResponse.result) and field 3 of Tensor is `data`.
constexpr char kTensorTag = (1 << 3) | 2;
constexpr char kDataTag = (3 << 3) | 2;

void append_varint(std::string* out, std::uint64_t value) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>(value | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

std::size_t varint_size(std::uint64_t value) {
  std::size_t size = 1;
  while (value >= 0x80) {
    value >>= 7;
    ++size;
  }
  return size;
}

bool read_varint(const std::string& bytes, std::size_t* position, std::uint64_t* value) {
  *value = 0;
  for (int shift = 0; shift < 64 && *position < bytes.size(); shift += 7) {
    const auto byte = static_cast<unsigned char>(bytes[(*position)++]);
    *value |= std::uint64_t{byte & 0x7fu} << shift;
    if (byte < 0x80) return true;
  }
  return false;
}

// A slice over the string's own buffer; gRPC frees the string once the transport is done with it.
grpc::Slice adopt(std::string bytes) {
  auto* owner = new std::string(std::move(bytes));
  grpc_slice slice = grpc_slice_new_with_user_data(
      owner->data(), owner->size(), [](void* data) { delete static_cast<std::string*>(data); },
      owner);
  return grpc::Slice(slice, grpc::Slice::STEAL_REF);
}

grpc::ByteBuffer encode(google::protobuf::MessageLite* message, v1::Tensor* tensor) {
  std::string payload = std::move(*tensor->mutable_data());
  tensor->clear_data();
  // Generated code writes fields in number order, so the tensor (field 1, present since the caller
  // asked for it through mutable_*) comes first: split it off and splice the payload in behind the
  // tensor's other fields, where protobuf would have put it.
  std::string fields = message->SerializeAsString();
  if (payload.empty()) {
    grpc::Slice whole(fields);
    return grpc::ByteBuffer(&whole, 1);
  }
  std::size_t position = 1;
  std::uint64_t tensor_length = 0;
  const bool tensor_first = !fields.empty() && fields[0] == kTensorTag &&
                            read_varint(fields, &position, &tensor_length) &&
                            position + tensor_length <= fields.size();
  if (!tensor_first) {
    // Unreachable with generated code; fall back to protobuf's own (copying) serialisation.
    *tensor->mutable_data() = std::move(payload);
    grpc::Slice whole(message->SerializeAsString());
    return grpc::ByteBuffer(&whole, 1);
  }
  const std::size_t data_field = 1 + varint_size(payload.size()) + payload.size();
  std::string head;
  head.reserve(32 + tensor_length);
  head.push_back(kTensorTag);
  append_varint(&head, tensor_length + data_field);
  head.append(fields, position, tensor_length);
  head.push_back(kDataTag);
  append_varint(&head, payload.size());

  grpc::Slice slices[3] = {grpc::Slice(head), adopt(std::move(payload)),
                           grpc::Slice(fields.substr(position + tensor_length))};
  return grpc::ByteBuffer(slices, slices[2].size() > 0 ? 3 : 2);
}

}  // namespace

grpc::ByteBuffer encode_request(v1::ScanRequest* request) {
  return encode(request, request->mutable_gamma());
}

grpc::ByteBuffer encode_response(v1::ScanResponse* response) {
  return encode(response, response->mutable_result());
}

grpc::Status decode(grpc::ByteBuffer* buffer, google::protobuf::MessageLite* message) {
  return grpc::SerializationTraits<google::protobuf::MessageLite>::Deserialize(buffer, message);
}

}  // namespace scan::wire

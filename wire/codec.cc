#include "scan/wire/codec.h"

#include <google/protobuf/io/coded_stream.h>
#include <grpc/slice.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/slice.h>

#include <algorithm>
#include <climits>
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

// Serialises `message`, whose tensor (field 1) has empty data, with `payload` as that tensor's
// data: protobuf's bytes for everything else, and the payload slice spliced in by reference.
grpc::ByteBuffer encode(const google::protobuf::MessageLite& message, grpc::Slice payload) {
  std::string fields = message.SerializeAsString();
  if (payload.size() == 0) {
    grpc::Slice whole(fields);
    return grpc::ByteBuffer(&whole, 1);
  }
  // Generated code writes fields in number order, so the tensor (field 1) comes first: split it
  // off and put the payload behind the tensor's other fields, where protobuf would have put it.
  // A message without field 1 yet is given an empty one.
  std::size_t position = 1;
  std::uint64_t tensor_length = 0;
  if (fields.empty() || fields[0] != kTensorTag ||
      !read_varint(fields, &position, &tensor_length) || position + tensor_length > fields.size()) {
    fields.insert(0, std::string{kTensorTag, 0});
    position = 2;
    tensor_length = 0;
  }
  const std::size_t data_field = 1 + varint_size(payload.size()) + payload.size();
  std::string head;
  head.reserve(32 + tensor_length);
  head.push_back(kTensorTag);
  append_varint(&head, tensor_length + data_field);
  head.append(fields, position, tensor_length);
  head.push_back(kDataTag);
  append_varint(&head, payload.size());

  grpc::Slice slices[3] = {grpc::Slice(head), std::move(payload),
                           grpc::Slice(fields.substr(position + tensor_length))};
  return grpc::ByteBuffer(slices, slices[2].size() > 0 ? 3 : 2);
}

template <class Owner>
grpc::Slice adopt_slice(Owner* owner, const std::string& bytes) {
  grpc_slice slice = grpc_slice_new_with_user_data(
      const_cast<char*>(bytes.data()), bytes.size(),
      [](void* data) { delete static_cast<Owner*>(data); }, owner);
  return grpc::Slice(slice, grpc::Slice::STEAL_REF);
}

// A slice over the string's own buffer; once the transport is done with it, gRPC frees the string
// or, with a pool, returns it there.
grpc::Slice adopt(std::string* data, std::shared_ptr<BufferPool> pool = nullptr) {
  if (!pool) {
    auto* owner = new std::string(std::move(*data));
    data->clear();
    return adopt_slice(owner, *owner);
  }
  auto* owner = new PooledBuffer(std::move(pool), std::move(*data));
  data->clear();
  return adopt_slice(owner, owner->bytes());
}

}  // namespace

grpc::ByteBuffer encode_request(v1::ScanRequest* request) {
  grpc::Slice payload = adopt(request->mutable_gamma()->mutable_data());
  return encode(*request, std::move(payload));
}

grpc::ByteBuffer encode_request(const v1::ScanRequest& request,
                                std::shared_ptr<const std::string> payload) {
  using Holder = std::shared_ptr<const std::string>;
  const std::string& bytes = *payload;
  return encode(request, adopt_slice(new Holder(std::move(payload)), bytes));
}

grpc::ByteBuffer encode_response(v1::ScanResponse* response, std::shared_ptr<BufferPool> pool) {
  grpc::Slice payload = adopt(response->mutable_result()->mutable_data(), std::move(pool));
  return encode(*response, std::move(payload));
}

namespace {

// `head` and then field `field_number` holding the `size` bytes of `payload` (by reference).
grpc::ByteBuffer with_bytes_field(std::string head, int field_number, std::size_t size,
                                  grpc::Slice payload) {
  head.push_back(static_cast<char>((field_number << 3) | 2));
  append_varint(&head, size);
  grpc::Slice slices[2] = {grpc::Slice(head), std::move(payload)};
  return grpc::ByteBuffer(slices, size > 0 ? 2 : 1);
}

}  // namespace

grpc::ByteBuffer encode_with_bytes_field(std::string head, int field_number, std::string* data,
                                         std::shared_ptr<BufferPool> pool) {
  const std::size_t size = data->size();
  if (size == 0) {
    if (pool) pool->give(std::move(*data));
    return with_bytes_field(std::move(head), field_number, 0, grpc::Slice());
  }
  return with_bytes_field(std::move(head), field_number, size, adopt(data, std::move(pool)));
}

grpc::ByteBuffer encode_with_bytes_field(const google::protobuf::MessageLite& message,
                                         int field_number, std::string* data,
                                         std::shared_ptr<BufferPool> pool) {
  return encode_with_bytes_field(message.SerializeAsString(), field_number, data, std::move(pool));
}

grpc::ByteBuffer encode_with_bytes_field(const google::protobuf::MessageLite& message,
                                         int field_number,
                                         std::shared_ptr<const std::string> payload) {
  using Holder = std::shared_ptr<const std::string>;
  const std::string& bytes = *payload;
  if (bytes.empty()) {
    return with_bytes_field(message.SerializeAsString(), field_number, 0, grpc::Slice());
  }
  return with_bytes_field(message.SerializeAsString(), field_number, bytes.size(),
                          adopt_slice(new Holder(std::move(payload)), bytes));
}

grpc::Status decode_repeated(grpc::ByteBuffer* buffer, google::protobuf::MessageLite* message,
                             google::protobuf::RepeatedPtrField<std::string>* field,
                             std::string* tensor_data, BufferPool* pool, int* entries) {
  // The pooled buffer as the field's spare element: protobuf's parser reuses a cleared element
  // for the field's first entry, and its capacity holds the whole message, so the entry is
  // written in place.
  *field->Add() = pool->take(buffer->Length());
  field->Clear();
  const grpc::Status status = decode(buffer, message);
  *entries = field->size();
  std::string* pooled = *entries > 0 ? field->Mutable(0) : field->Add();
  tensor_data->swap(*pooled);
  if (*entries == 0) field->RemoveLast();
  return status;
}

grpc::Status decode(grpc::ByteBuffer* buffer, google::protobuf::MessageLite* message) {
  // Merging, not parsing: ParseFrom* first clears the message, which deletes the tensor submessage
  // together with a pooled data buffer the caller put there.
  grpc::ProtoBufferReader reader(buffer);
  grpc::Status status = reader.status();
  if (status.ok()) {
    google::protobuf::io::CodedInputStream stream(&reader);
    stream.SetTotalBytesLimit(INT_MAX);
    if (!message->MergeFromCodedStream(&stream) || !stream.ConsumedEntireMessage()) {
      status = {grpc::StatusCode::INTERNAL, "cannot parse " + message->GetTypeName()};
    }
  }
  buffer->Clear();
  return status;
}

grpc::Status decode(grpc::ByteBuffer* buffer, google::protobuf::MessageLite* message,
                    std::string* tensor_data, BufferPool* pool) {
  // The whole message bounds the tensor's size; pooled buffers are only ever reused, so asking
  // for a little more than the tensor needs costs nothing.
  *tensor_data = pool->take(buffer->Length());
  return decode(buffer, message);
}

grpc::ByteBuffer encode_message(const google::protobuf::MessageLite& message) {
  grpc::Slice whole(message.SerializeAsString());
  return grpc::ByteBuffer(&whole, 1);
}

grpc::ByteBuffer encode_chunk(int field_number, const char* data, std::size_t size,
                              std::shared_ptr<const void> owner) {
  std::string head;
  head.push_back(static_cast<char>((field_number << 3) | 2));
  append_varint(&head, size);
  grpc::Slice slices[2] = {grpc::Slice(head), grpc::Slice()};
  if (size == 0) return grpc::ByteBuffer(slices, 1);
  using Holder = std::shared_ptr<const void>;
  grpc_slice payload = grpc_slice_new_with_user_data(
      const_cast<char*>(data), size, [](void* holder) { delete static_cast<Holder*>(holder); },
      new Holder(std::move(owner)));
  slices[1] = grpc::Slice(payload, grpc::Slice::STEAL_REF);
  return grpc::ByteBuffer(slices, 2);
}

ChunkAppend append_chunk(grpc::ByteBuffer* message, int field_number, std::string* out,
                         std::size_t limit, std::size_t* payload_bytes) {
  std::vector<grpc::Slice> slices;
  if (!message->Dump(&slices).ok()) return ChunkAppend::kNotAChunk;
  // The tag and the length varint: at most 11 bytes, possibly spread over several slices.
  std::string head;
  for (const grpc::Slice& slice : slices) {
    if (head.size() >= 11) break;
    head.append(reinterpret_cast<const char*>(slice.begin()),
                std::min<std::size_t>(slice.size(), 11 - head.size()));
  }
  std::size_t position = 1;
  std::uint64_t length = 0;
  if (head.empty() || head[0] != static_cast<char>((field_number << 3) | 2) ||
      !read_varint(head, &position, &length) || position + length != message->Length()) {
    return ChunkAppend::kNotAChunk;
  }
  if (length > limit || out->size() > limit - length) {
    if (payload_bytes != nullptr) *payload_bytes = static_cast<std::size_t>(length);
    return ChunkAppend::kOverflow;
  }
  std::size_t skip = position;
  for (const grpc::Slice& slice : slices) {
    const auto* bytes = reinterpret_cast<const char*>(slice.begin());
    const std::size_t skipped = std::min(skip, slice.size());
    skip -= skipped;
    out->append(bytes + skipped, slice.size() - skipped);
  }
  message->Clear();
  return ChunkAppend::kAppended;
}

}  // namespace scan::wire

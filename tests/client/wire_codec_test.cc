// The zero-copy codec must put exactly protobuf's bytes on the wire, and its buffer pool must
// actually hand buffers back (that is the point of it).
#include "wire_codec.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

namespace scan::wire {
namespace {

std::string flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string bytes;
  for (const auto& slice : slices)
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  return bytes;
}

std::string pattern(std::size_t size) {
  std::string bytes(size, '\0');
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>(i * 131 + 7);
  return bytes;
}

v1::ScanRequest request_with(std::size_t bytes) {
  v1::ScanRequest request;
  request.mutable_gamma()->set_dtype(v1::DATA_TYPE_FLOAT32);
  request.mutable_gamma()->add_shape(3);
  request.mutable_gamma()->add_shape(static_cast<std::int64_t>(bytes));
  request.mutable_gamma()->set_data(pattern(bytes));
  request.set_dim(-1);
  request.set_backend(v1::BACKEND_PREFERENCE_CPU);
  return request;
}

// Sizes around the varint boundaries of the length prefixes (127/128, 16383/16384) and large.
const std::size_t kSizes[] = {0, 1, 100, 127, 128, 16383, 16384, (1u << 20) + 3};

TEST(WireCodec, RequestBytesAreProtobufsOwn) {
  for (const std::size_t size : kSizes) {
    v1::ScanRequest request = request_with(size);
    const std::string expected = request.SerializeAsString();
    EXPECT_EQ(flatten(encode_request(&request)), expected) << size << " bytes";
    EXPECT_TRUE(request.gamma().data().empty()) << "the data was moved, not copied";
  }
}

TEST(WireCodec, ResponseBytesAreProtobufsOwnAndDecodeBack) {
  for (const std::size_t size : kSizes) {
    v1::ScanResponse response;
    response.mutable_result()->set_dtype(v1::DATA_TYPE_BFLOAT16);
    response.mutable_result()->add_shape(static_cast<std::int64_t>(size));
    response.mutable_result()->set_data(pattern(size));
    response.set_backend("cpu-native");
    response.mutable_timing()->set_compute_us(42);
    const std::string expected = response.SerializeAsString();
    v1::ScanResponse copy = response;
    grpc::ByteBuffer buffer = encode_response(&copy);
    EXPECT_EQ(flatten(buffer), expected) << size << " bytes";

    v1::ScanResponse decoded;
    ASSERT_TRUE(decode(&buffer, &decoded).ok());
    EXPECT_EQ(decoded.SerializeAsString(), expected);
  }
}

TEST(WireCodec, SharedPayloadIsSentByReferenceAndRepeatable) {
  v1::ScanRequest header;
  header.set_dim(2);  // no gamma at all: the codec adds the tensor field
  auto payload = std::make_shared<const std::string>(pattern(5000));
  for (int round = 0; round < 2; ++round) {
    grpc::ByteBuffer buffer = encode_request(header, payload);
    v1::ScanRequest decoded;
    ASSERT_TRUE(decode(&buffer, &decoded).ok());
    EXPECT_EQ(decoded.dim(), 2);
    EXPECT_EQ(decoded.gamma().data(), *payload);
  }
  EXPECT_EQ(payload.use_count(), 1) << "gRPC's slices released the payload";
}

TEST(WireCodec, DecodeFillsThePooledBufferInPlace) {
  BufferPool pool(std::size_t{64} << 20);
  pool.give(std::string(std::size_t{4} << 20, 'x'));
  v1::ScanRequest original = request_with(std::size_t{2} << 20);
  const std::string expected_data = original.gamma().data();
  grpc::ByteBuffer buffer = encode_request(&original);

  v1::ScanRequest decoded;
  std::string* data = decoded.mutable_gamma()->mutable_data();
  ASSERT_TRUE(decode(&buffer, &decoded, data, &pool).ok());
  EXPECT_EQ(pool.pooled_bytes(), 0u) << "the pooled buffer was taken";
  EXPECT_GE(decoded.gamma().data().capacity(), std::size_t{4} << 20) << "and parsed into";
  EXPECT_EQ(decoded.gamma().data(), expected_data);
  EXPECT_EQ(decoded.dim(), -1);
}

TEST(WireCodec, GarbageDoesNotDecode) {
  grpc::Slice slice(std::string("\x0a\xff\xff\xff\xff\x0f", 6));
  grpc::ByteBuffer buffer(&slice, 1);
  v1::ScanRequest request;
  EXPECT_FALSE(decode(&buffer, &request).ok());
}

// A buffer of `bytes` cut into slices of `piece` bytes, as gRPC hands over what it read.
grpc::ByteBuffer sliced(const std::string& bytes, std::size_t piece) {
  std::vector<grpc::Slice> slices;
  for (std::size_t offset = 0; offset < bytes.size(); offset += piece) {
    slices.emplace_back(bytes.data() + offset, std::min(piece, bytes.size() - offset));
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

TEST(StreamChunks, EncodedChunksAreProtobufsOwnAndAppendBackWhateverTheSlicing) {
  for (const std::size_t size : kSizes) {
    auto payload = std::make_shared<const std::string>(pattern(size));
    const grpc::ByteBuffer encoded = encode_chunk(v1::ScanStreamRequest::kChunkFieldNumber,
                                                  payload->data(), payload->size(), payload);
    v1::ScanStreamRequest expected;
    expected.set_chunk(*payload);
    const std::string wire = flatten(encoded);
    ASSERT_EQ(wire, expected.SerializeAsString()) << size;

    for (const std::size_t piece : {std::size_t{1}, std::size_t{3}, wire.size() + 1}) {
      grpc::ByteBuffer message = sliced(wire, piece);
      std::string out = "head";
      ASSERT_EQ(append_chunk(&message, v1::ScanStreamRequest::kChunkFieldNumber, &out, size + 4),
                ChunkAppend::kAppended)
          << size << " in pieces of " << piece;
      EXPECT_EQ(out, "head" + *payload);
    }
  }
}

TEST(StreamChunks, AnythingButAPlainChunkIsLeftForProtobuf) {
  v1::ScanStreamRequest header;
  header.mutable_header()->set_dim(1);
  v1::ScanStreamRequest with_unknown_field;
  with_unknown_field.set_chunk("abc");
  std::string unknown_first = std::string("\x48\x01") + with_unknown_field.SerializeAsString();
  v1::ScanStreamResponse response_chunk;
  response_chunk.set_chunk("abc");  // field 3: not the request's chunk field
  for (const std::string& wire :
       {header.SerializeAsString(), unknown_first, with_unknown_field.SerializeAsString() + "\x48",
        response_chunk.SerializeAsString(), std::string()}) {
    grpc::ByteBuffer message = sliced(wire, 2);
    std::string out;
    EXPECT_EQ(append_chunk(&message, v1::ScanStreamRequest::kChunkFieldNumber, &out, 100),
              ChunkAppend::kNotAChunk);
    EXPECT_TRUE(out.empty());
    EXPECT_EQ(message.Length(), wire.size()) << "the message must be left for the fallback";
  }
}

TEST(StreamChunks, AChunkBeyondTheLimitIsRefusedWithoutAppending) {
  v1::ScanStreamRequest chunk;
  chunk.set_chunk(pattern(10));
  grpc::ByteBuffer message = sliced(chunk.SerializeAsString(), 4);
  std::string out = pattern(5);
  EXPECT_EQ(append_chunk(&message, v1::ScanStreamRequest::kChunkFieldNumber, &out, 14),
            ChunkAppend::kOverflow);
  EXPECT_EQ(out, pattern(5));
}

TEST(BufferPool, TakesTheBestFitAndKeepsWithinItsBound) {
  constexpr std::size_t kMi = std::size_t{1} << 20;
  BufferPool pool(10 * kMi, kMi);
  pool.give(std::string(100, 'a'));  // below the minimum: not kept
  EXPECT_EQ(pool.pooled_bytes(), 0u);
  std::string small, large;
  small.reserve(2 * kMi);
  large.reserve(6 * kMi);
  const std::size_t small_capacity = small.capacity(), large_capacity = large.capacity();
  pool.give(std::move(small));
  pool.give(std::move(large));
  EXPECT_EQ(pool.pooled_bytes(), small_capacity + large_capacity);

  const std::string taken = pool.take(kMi + 1);
  EXPECT_EQ(taken.capacity(), small_capacity) << "smallest buffer that fits";
  EXPECT_TRUE(taken.empty());
  EXPECT_GE(pool.take(20 * kMi).capacity(), 20 * kMi) << "none fits: a fresh one";
  EXPECT_EQ(pool.pooled_bytes(), large_capacity);

  std::string bigger;
  bigger.reserve(9 * kMi);
  const std::size_t bigger_capacity = bigger.capacity();
  pool.give(std::move(bigger));  // evicts the 6 MiB buffer to stay within 10 MiB
  EXPECT_EQ(pool.pooled_bytes(), bigger_capacity);
}

}  // namespace
}  // namespace scan::wire

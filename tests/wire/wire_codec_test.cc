// The zero-copy codec must put exactly protobuf's bytes on the wire, and its buffer pool must
// actually hand buffers back (that is the point of it).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "inference/grpc_service.pb.h"
#include "scan/wire/codec.h"

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

// KServe's messages carry the tensor as a top-level repeated bytes field.
inference::ModelInferResponse infer_head() {
  inference::ModelInferResponse head;
  head.set_model_name("cumprod");
  head.set_id("a request");
  auto* output = head.add_outputs();
  output->set_name("output");
  output->set_datatype("FP32");
  output->add_shape(7);
  (*head.mutable_parameters())["backend"].set_string_param("cpu-native");
  return head;
}

TEST(WireCodec, BytesFieldAppendedIsProtobufsLastEntryWhateverTheOwner) {
  for (const std::size_t bytes : {std::size_t{0}, std::size_t{1}, std::size_t{1000003}}) {
    inference::ModelInferResponse expected = infer_head();
    expected.add_raw_output_contents(pattern(bytes));

    std::string data = pattern(bytes);
    auto pool = std::make_shared<BufferPool>(std::size_t{64} << 20, 1);
    const grpc::ByteBuffer moved = encode_with_bytes_field(
        infer_head(), inference::ModelInferResponse::kRawOutputContentsFieldNumber, &data, pool);
    EXPECT_EQ(flatten(moved), expected.SerializeAsString()) << bytes;
    EXPECT_TRUE(data.empty()) << "moved out, not copied";

    auto shared = std::make_shared<const std::string>(pattern(bytes));
    const grpc::ByteBuffer referenced = encode_with_bytes_field(
        infer_head(), inference::ModelInferResponse::kRawOutputContentsFieldNumber, shared);
    EXPECT_EQ(flatten(referenced), expected.SerializeAsString()) << bytes;
  }
}

TEST(WireCodec, DecodeRepeatedParsesTheFirstEntryIntoThePooledBuffer) {
  for (const int entries : {0, 1, 3}) {
    BufferPool pool(std::size_t{64} << 20);
    pool.give(std::string(std::size_t{16} << 20, 'x'));
    inference::ModelInferResponse original = infer_head();
    for (int entry = 0; entry < entries; ++entry) {
      original.add_raw_output_contents(pattern((std::size_t{2} << 20) + entry));
    }
    grpc::ByteBuffer buffer = encode_message(original);

    inference::ModelInferResponse decoded;
    std::string tensor;
    int found = -1;
    ASSERT_TRUE(decode_repeated(&buffer, &decoded, decoded.mutable_raw_output_contents(), &tensor,
                                &pool, &found)
                    .ok());
    EXPECT_EQ(found, entries);
    if (entries > 0) {
      EXPECT_EQ(pool.pooled_bytes(), 0u) << "the pooled buffer was taken";
      EXPECT_GE(tensor.capacity(), std::size_t{16} << 20) << "and parsed into";
    }  // else: a small message takes a small buffer, which still ends in `tensor`
    EXPECT_EQ(tensor, entries > 0 ? original.raw_output_contents(0) : std::string());
    EXPECT_EQ(decoded.raw_output_contents_size(), entries) << "the entries are all still there";
    for (int entry = 1; entry < entries; ++entry) {
      EXPECT_EQ(decoded.raw_output_contents(entry), original.raw_output_contents(entry));
    }
    EXPECT_EQ(decoded.id(), "a request");
    EXPECT_EQ(decoded.outputs(0).shape(0), 7);
    pool.give(std::move(tensor));
    EXPECT_GE(pool.pooled_bytes(), std::size_t{16} << 20) << "and goes back to the pool";
  }
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

TEST(BufferPool, BuffersForOverwriteKeepTheirSizeSoResizingWritesNothing) {
  BufferPool pool(std::size_t{64} << 20);
  std::string buffer = pool.take(std::size_t{4} << 20);
  buffer.assign(std::size_t{4} << 20, 'x');
  const char* data = buffer.data();
  pool.give(std::move(buffer));
  std::string again = pool.take_for_overwrite(std::size_t{3} << 20);
  EXPECT_EQ(again.data(), data);
  ASSERT_EQ(again.size(), std::size_t{4} << 20);
  again.resize(std::size_t{3} << 20);
  EXPECT_EQ(again.back(), 'x');  // shrunk in place, nothing written
  pool.give(std::move(again));
  EXPECT_TRUE(pool.take(std::size_t{3} << 20).empty());  // take() still hands out empty strings

  auto shared = std::make_shared<BufferPool>(std::size_t{64} << 20);
  shared->give(std::string(std::size_t{2} << 20, 'y'));
  const auto overwrite = PooledBuffer::for_overwrite(shared, std::size_t{1} << 20);
  EXPECT_EQ(overwrite->bytes().size(), std::size_t{1} << 20);
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

TEST(BufferPool, PrefillPutsPagedInBuffersOfEveryPowerOfTwoLargestFirst) {
  constexpr std::size_t kMi = std::size_t{1} << 20;
  BufferPool pool(16 * kMi, kMi);
  // 3 MiB rounds up to 4 MiB: 4, 4, 2, 2, 1, 1 MiB.
  EXPECT_EQ(pool.prefill(3 * kMi, 2), 14 * kMi);
  EXPECT_EQ(pool.pooled_bytes(), 14 * kMi);
  // Requests between the powers of two take a pooled buffer at most twice their size, and one
  // that was written already (for_overwrite: its bytes are the prefill's zeros).
  for (const std::size_t bytes : {3 * kMi, 2 * kMi + 1, kMi + 7, kMi}) {
    std::string taken = pool.take_for_overwrite(bytes);
    EXPECT_GE(taken.capacity(), bytes);
    EXPECT_LE(taken.capacity(), 2 * bytes);
    ASSERT_EQ(taken.size(), taken.capacity()) << "prefilled buffers come back written";
    EXPECT_EQ(taken.find_first_not_of('\0'), std::string::npos);
  }
  // What does not fit in the pool's bound is the small buffers: 8 MiB holds the two 4 MiB ones.
  BufferPool tight(8 * kMi, kMi);
  EXPECT_EQ(tight.prefill(4 * kMi, 2), 8 * kMi);
  EXPECT_GE(tight.take(4 * kMi).capacity(), 4 * kMi);
  EXPECT_EQ(tight.pooled_bytes(), 4 * kMi);
  // Nothing below the pool's minimum, and nothing at all when no buffer fits.
  BufferPool tiny(kMi / 2, kMi);
  EXPECT_EQ(tiny.prefill(64 * kMi, 2), 0u);
}

// A burst beyond a size's copies is served by larger pooled buffers and fresh ones. Once all are
// back, the full pool keeps a copy of every size it was filled with, and lets the extras go:
// before, smaller buffers made way for the last large ones, and the next small request faulted in a
// fresh buffer (on the GPU host, the 16 and 64 MiB buffers went the same way).
TEST(BufferPool, ABurstOfOneSizeLeavesEverySizeItsCopies) {
  constexpr std::size_t kMi = std::size_t{1} << 20;
  BufferPool pool(30 * kMi, kMi);
  ASSERT_EQ(pool.prefill(8 * kMi, 2), 30 * kMi);  // 8, 8, 4, 4, 2, 2, 1, 1 MiB
  std::vector<std::string> burst;
  for (int call = 0; call < 8; ++call) burst.push_back(pool.take(2 * kMi));
  EXPECT_EQ(pool.pooled_bytes(), 2 * kMi) << "two 1 MiB buffers left";
  // Back in the order that evicted the most: the two fresh ones first, the 8 MiB ones last.
  std::sort(burst.begin(), burst.end(),
            [](const std::string& a, const std::string& b) { return a.capacity() < b.capacity(); });
  std::rotate(burst.begin(), burst.begin() + 2, burst.end() - 2);
  for (std::string& buffer : burst) pool.give(std::move(buffer));
  EXPECT_EQ(pool.pooled_bytes(), 30 * kMi);
  for (const std::size_t size : {kMi, kMi, 2 * kMi, 2 * kMi, 4 * kMi, 4 * kMi, 8 * kMi, 8 * kMi}) {
    EXPECT_EQ(pool.take(size).capacity(), size) << "a pooled buffer of exactly " << size;
  }

  // Full, with every size at its copies: one more buffer of a size goes, and nothing makes way.
  BufferPool full(6 * kMi, kMi);
  ASSERT_EQ(full.prefill(2 * kMi, 2), 6 * kMi);
  full.give(std::string(2 * kMi, 'x'));
  EXPECT_EQ(full.pooled_bytes(), 6 * kMi);
  EXPECT_EQ(full.take(kMi).capacity(), kMi) << "the 1 MiB buffers stayed";
}

// Records the listener calls and checks their contract as they come: a buffer is kept at most once
// until dropped, dropped only when kept, kept ranges never overlap, and a dropped buffer's memory
// is still allocated and intact (its first bytes hold the pattern written before give()).
class RecordingListener final : public BufferPool::Listener {
 public:
  void kept(const void* data, std::size_t bytes) override {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto start = reinterpret_cast<std::uintptr_t>(data);
    for (const auto& [other, other_bytes] : live_) {
      EXPECT_FALSE(other < start + bytes && start < other + other_bytes) << "overlapping kept";
    }
    EXPECT_TRUE(live_.emplace(start, bytes).second) << "kept twice";
    ++kept_;
  }
  void dropped(const void* data, std::size_t bytes) override {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto found = live_.find(reinterpret_cast<std::uintptr_t>(data));
    ASSERT_NE(found, live_.end()) << "dropped without kept, or twice";
    EXPECT_EQ(found->second, bytes);
    live_.erase(found);
    ++dropped_;
    // Still allocated (ASan would catch a read of freed memory) and untouched.
    EXPECT_EQ(static_cast<const unsigned char*>(data)[0], 0xa5) << "memory reused before dropped";
  }
  std::size_t live() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return live_.size();
  }
  int kept_count() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return kept_;
  }
  int dropped_count() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return dropped_;
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::uintptr_t, std::size_t> live_;
  int kept_ = 0, dropped_ = 0;
};

// A buffer of at least `bytes` capacity, marked for RecordingListener.
std::string marked(std::string buffer, std::size_t bytes) {
  buffer.resize(std::max<std::size_t>(bytes, 1), '\0');
  buffer[0] = static_cast<char>(0xa5);
  return buffer;
}

TEST(BufferPool, ListenerSeesEachBufferKeptOnceAndDroppedBeforeItIsFreed) {
  constexpr std::size_t kMi = std::size_t{1} << 20;
  auto listener = std::make_shared<RecordingListener>();
  auto pool = std::make_unique<BufferPool>(10 * kMi, kMi);
  EXPECT_TRUE(pool->set_listener(listener));
  EXPECT_FALSE(pool->set_listener(std::make_shared<RecordingListener>())) << "only once";

  pool->give(marked({}, 100));       // too small for the pool: never kept
  pool->give(marked({}, 11 * kMi));  // larger than the whole pool: never kept
  EXPECT_EQ(listener->kept_count(), 0);

  pool->give(marked({}, 4 * kMi));
  EXPECT_EQ(listener->kept_count(), 1);
  // Taken and given back, again and again: still the one buffer, kept once.
  for (int round = 0; round < 3; ++round) {
    std::string buffer = pool->take(3 * kMi);
    EXPECT_EQ(pool->pooled_bytes(), 0u);
    pool->give(marked(std::move(buffer), 3 * kMi));
  }
  EXPECT_EQ(listener->kept_count(), 1);
  EXPECT_EQ(listener->dropped_count(), 0);

  // A larger buffer evicts the known one: dropped, before its memory is freed.
  pool->give(marked({}, 8 * kMi));
  EXPECT_EQ(listener->kept_count(), 2);
  EXPECT_EQ(listener->dropped_count(), 1);
  EXPECT_EQ(listener->live(), 1u);

  // Handed out, and no room any more when it comes back: dropped, not kept again.
  std::string out = pool->take(5 * kMi);
  pool->give(marked({}, 9 * kMi));
  EXPECT_EQ(listener->kept_count(), 3);
  pool->give(marked(std::move(out), 5 * kMi));
  EXPECT_EQ(listener->kept_count(), 3);
  EXPECT_EQ(listener->dropped_count(), 2);

  // A known buffer still handed out when the pool goes is dropped with the rest.
  std::string held = marked(pool->take(9 * kMi), 9 * kMi);
  EXPECT_EQ(listener->live(), 1u);
  pool.reset();
  EXPECT_EQ(listener->live(), 0u) << "the handed-out one too";
  EXPECT_EQ(listener->kept_count(), listener->dropped_count());
}

TEST(BufferPool, ListenerSetLaterKeepsWhatIsPooledAlready) {
  constexpr std::size_t kMi = std::size_t{1} << 20;
  auto listener = std::make_shared<RecordingListener>();
  auto pool = std::make_unique<BufferPool>(10 * kMi, kMi);
  pool->give(marked({}, 2 * kMi));
  pool->give(marked({}, 3 * kMi));
  EXPECT_TRUE(pool->set_listener(listener));
  EXPECT_EQ(listener->kept_count(), 2);
  pool.reset();
  EXPECT_EQ(listener->dropped_count(), 2);
  EXPECT_EQ(listener->live(), 0u);
}

TEST(BufferPool, ListenerCallsPairUpUnderConcurrentUse) {
  constexpr std::size_t kMi = std::size_t{1} << 20;
  auto listener = std::make_shared<RecordingListener>();
  {
    auto pool = std::make_shared<BufferPool>(16 * kMi, kMi);
    pool->set_listener(listener);
    std::vector<std::thread> threads;
    for (int thread = 0; thread < 4; ++thread) {
      threads.emplace_back([pool, thread] {
        std::mt19937 generator(static_cast<unsigned>(thread));
        std::uniform_int_distribution<std::size_t> size(kMi / 2, 5 * kMi);
        for (int round = 0; round < 200; ++round) {
          const std::size_t bytes = size(generator);
          std::string buffer = pool->take(bytes);
          std::string second = pool->take(size(generator));
          pool->give(marked(std::move(buffer), bytes));
          pool->give(marked(std::move(second), 1));
        }
      });
    }
    for (auto& thread : threads) thread.join();
    EXPECT_GT(listener->kept_count(), 0);
    EXPECT_LE(pool->pooled_bytes(), 16 * kMi);
  }
  EXPECT_EQ(listener->live(), 0u);
  EXPECT_EQ(listener->kept_count(), listener->dropped_count());
}

}  // namespace
}  // namespace scan::wire

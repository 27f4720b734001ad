// ScanStream against a real in-process server on loopback: results checked against the float64
// reference, the conversation's order and byte counts enforced with errors naming the field, and
// admission before any tensor byte is sent.
#include <gmock/gmock.h>
#include <grpcpp/client_context.h>
#include <gtest/gtest.h>

#include <atomic>
#include <limits>
#include <random>
#include <thread>

#include "app/server.h"
#include "in_process_server.h"
#include "scan/client/scan_client.h"
#include "scan/wire/dtype.h"

namespace scan {
namespace {

using kernels::DType;
using ::testing::HasSubstr;

using RawStream = grpc::ClientReaderWriter<v1::ScanStreamRequest, v1::ScanStreamResponse>;

std::uint64_t fresh_seed() { return std::random_device{}(); }

class StreamTest : public ::testing::Test {
 protected:
  // Small limits, so that tests can reach them with small tensors: a message holds at most
  // 1 MiB, a tensor up to 8 MiB (so only streams carry the large ones), and the in-flight budget
  // fits one such tensor with its result.
  static constexpr std::int64_t kMaxMessageBytes = std::int64_t{1} << 20;
  static constexpr std::int64_t kMaxTensorBytes = std::int64_t{8} << 20;

  void SetUp() override {
    server::ServerConfig config = testing::loopback_config();
    config.max_tensor_bytes = kMaxTensorBytes;
    config.max_message_bytes = kMaxMessageBytes;
    config.max_inflight_bytes = 2 * kMaxTensorBytes;
    config.stream_chunk_bytes = 100000;  // not a multiple of any element size
    config.worker_threads = 2;
    // One backend, so that equal requests give equal bytes whichever RPC carried them (cpu-torch
    // may differ from cpu-native in the last bit); service_test.cc covers each backend.
    config.cpu_backend = "cpu-native";
    running_ = std::make_unique<testing::InProcessServer>(config);
    ASSERT_TRUE(running_->started());
    target_ = running_->target();
    client_ = &running_->client();
    stub_ = v1::ScanService::NewStub(client_->channel());
  }

  void TearDown() override {
    stub_.reset();
    running_.reset();
  }

  grpc::Status stream(const client::HostTensor& gamma, int dim, std::size_t chunk_bytes,
                      client::ScanResult* result) {
    client::ScanOptions options;
    options.dim = dim;
    options.timeout = std::chrono::seconds(60);
    options.stream_chunk_bytes = chunk_bytes;
    return client_->Scan(gamma, options, result);
  }

  static v1::ScanStreamRequest header_for(const client::HostTensor& gamma, int dim) {
    v1::ScanStreamRequest message;
    v1::ScanRequest* header = message.mutable_header();
    header->mutable_gamma()->set_dtype(v1::to_wire_dtype(gamma.dtype));
    for (const auto size : gamma.shape) header->mutable_gamma()->add_shape(size);
    header->set_dim(dim);
    return message;
  }

  static v1::ScanStreamRequest chunk_of(const std::string& bytes) {
    v1::ScanStreamRequest message;
    message.set_chunk(bytes);
    return message;
  }

  // Sends `messages` as they are (whatever the server answers in between), closes, and returns
  // the call's status.
  grpc::Status converse(const std::vector<v1::ScanStreamRequest>& messages) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    std::unique_ptr<RawStream> raw = stub_->ScanStream(&context);
    for (const auto& message : messages) {
      if (!raw->Write(message)) break;
    }
    raw->WritesDone();
    v1::ScanStreamResponse ignored;
    while (raw->Read(&ignored)) {
    }
    return raw->Finish();
  }

  std::unique_ptr<testing::InProcessServer> running_;
  std::string target_;
  client::Client* client_ = nullptr;
  std::unique_ptr<v1::ScanService::Stub> stub_;
};

TEST_F(StreamTest, StreamsEveryDtypeCorrectlyWhateverTheChunkSize) {
  struct Case {
    DType dtype;
    std::vector<std::int64_t> shape;
    int dim;
    std::size_t chunk_bytes;
  };
  const Case cases[] = {
      {DType::kFloat32, {2, 4, 1031, 64}, 2, client::kDefaultStreamChunkBytes},
      {DType::kBFloat16, {2, 8, 509, 128}, 2, 65537},
      {DType::kFloat64, {3, 1, 97}, -1, 7},  // chunks that split elements
      {DType::kFloat16, {1, 4099}, 1, 1000},
      {DType::kFloat32, {1}, 0, 1},  // length 1
      {DType::kFloat32, {13, 1, 3}, 1, 5},
  };
  for (const Case& c : cases) {
    const auto gamma = client::random_gamma(c.dtype, c.shape, 0.5, 1.0, fresh_seed());
    client::ScanResult result;
    const grpc::Status status = stream(gamma, c.dim, c.chunk_bytes, &result);
    ASSERT_TRUE(status.ok()) << kernels::dtype_name(c.dtype) << " " << client::format_shape(c.shape)
                             << ": " << status.error_message();
    EXPECT_EQ(result.result.dtype, c.dtype);
    EXPECT_EQ(result.result.shape, c.shape);
    EXPECT_EQ(result.backend, "cpu-native");
    EXPECT_GE(result.server_timing.total_us(), result.server_timing.compute_us());
    const int dim = c.dim < 0 ? c.dim + static_cast<int>(c.shape.size()) : c.dim;
    const auto comparison = client::check_cumprod(gamma, result.result, dim);
    EXPECT_TRUE(comparison.ok()) << kernels::dtype_name(c.dtype) << " "
                                 << client::format_shape(c.shape) << ": " << comparison.mismatches
                                 << " mismatches";
  }
}

TEST_F(StreamTest, StreamAndUnaryGiveTheSameBytes) {
  const auto gamma = client::random_gamma(DType::kFloat32, {2, 3, 331, 8}, 0.5, 1.0, fresh_seed());
  client::ScanResult streamed, unary;
  ASSERT_TRUE(stream(gamma, 2, 4096, &streamed).ok());
  ASSERT_TRUE(stream(gamma, 2, 0, &unary).ok());
  EXPECT_EQ(streamed.backend, unary.backend);
  EXPECT_EQ(streamed.result.data, unary.result.data);
}

TEST_F(StreamTest, SpecialValuesAndEmptyTensorsSurviveTheStream) {
  auto gamma = client::random_gamma(DType::kFloat32, {3, 257}, 0.5, 1.0, fresh_seed());
  auto* values = reinterpret_cast<float*>(gamma.data.data());
  values[5] = 0.0f;
  values[257 + 9] = std::numeric_limits<float>::quiet_NaN();
  values[2 * 257 + 1] = std::numeric_limits<float>::infinity();
  client::ScanResult result;
  ASSERT_TRUE(stream(gamma, 1, 333, &result).ok());
  EXPECT_TRUE(client::check_cumprod(gamma, result.result, 1).ok());

  const client::HostTensor empty{DType::kBFloat16, {4, 0, 2}, {}};
  ASSERT_TRUE(stream(empty, 1, 1024, &result).ok());
  EXPECT_EQ(result.result.shape, empty.shape);
  EXPECT_TRUE(result.result.data.empty());
}

TEST_F(StreamTest, TensorsLargerThanOneMessageTravelOnlyAsStreams) {
  // 6 MiB: six times the message limit, within the tensor limit.
  const auto gamma = client::random_gamma(DType::kFloat32, {4, 3072, 128}, 0.5, 1.0, fresh_seed());
  client::ScanResult result;
  EXPECT_EQ(stream(gamma, 1, 0, &result).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Larger chunks than the server takes are cut down to its `accepted.max_chunk_bytes`.
  const grpc::Status status = stream(gamma, 1, std::size_t{64} << 20, &result);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(client::check_cumprod(gamma, result.result, 1).ok());
}

TEST_F(StreamTest, ServerInfoTellsClientsTheLimitsThatDecideBetweenScanAndScanStream) {
  v1::GetServerInfoResponse info;
  ASSERT_TRUE(client_->GetServerInfo(&info).ok());
  EXPECT_EQ(info.limits().max_tensor_bytes(), kMaxTensorBytes);
  EXPECT_EQ(info.limits().max_message_bytes(), kMaxMessageBytes);
  EXPECT_EQ(info.limits().max_inflight_bytes(), 2 * kMaxTensorBytes);
  EXPECT_EQ(info.limits().max_rank(), 16);
}

TEST_F(StreamTest, HeaderErrorsNameTheFieldInsideTheHeader) {
  client::ScanResult result;
  auto gamma = client::random_gamma(DType::kFloat32, {4, 8}, 0.5, 1.0, fresh_seed());
  grpc::Status status = stream(gamma, 2, 1024, &result);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("header.dim"));

  const auto over = client::random_gamma(DType::kFloat32, {kMaxTensorBytes / 4 + 1}, 0.5, 1.0, 1);
  status = stream(over, 0, 1 << 16, &result);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("header.gamma"));

  auto with_data = header_for(gamma, 0);
  with_data.mutable_header()->mutable_gamma()->set_data(gamma.data);
  status = converse({with_data});
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("header.gamma.data"));
}

TEST_F(StreamTest, ConversationOutOfOrderIsRefusedNamingWhatWasWrong) {
  const auto gamma = client::random_gamma(DType::kFloat32, {4, 100}, 0.5, 1.0, fresh_seed());
  const auto header = header_for(gamma, 1);
  const std::string& bytes = gamma.data;
  struct Case {
    const char* what;
    std::vector<v1::ScanStreamRequest> messages;
    const char* expected;
  };
  const Case cases[] = {
      {"nothing at all", {}, "ended before its header"},
      {"a chunk first", {chunk_of(bytes)}, "must be its header"},
      {"a second header", {header, chunk_of(bytes.substr(0, 10)), header}, "second header"},
      {"too many bytes", {header, chunk_of(bytes), chunk_of("x")}, "takes the tensor past"},
      {"too many in one chunk", {header, chunk_of(bytes + "yz")}, "takes the tensor past"},
      {"too few bytes", {header, chunk_of(bytes.substr(1))}, "ended after 1599 of the 1600"},
      {"neither part", {header, v1::ScanStreamRequest()}, "neither header nor chunk"},
  };
  for (const Case& c : cases) {
    const grpc::Status status = converse(c.messages);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.what;
    EXPECT_THAT(status.error_message(), HasSubstr(c.expected)) << c.what;
  }
  // ... and the server still serves correctly.
  client::ScanResult result;
  ASSERT_TRUE(stream(gamma, 1, 64, &result).ok());
  EXPECT_TRUE(client::check_cumprod(gamma, result.result, 1).ok());
}

TEST_F(StreamTest, AChunkOfExactlyMaxChunkBytesIsTakenAndOneByteMoreIsNamedPrecisely) {
  // (1 MiB - 4) bytes: 262143 float32 values, sent as one chunk of exactly max_chunk_bytes.
  const auto gamma = client::random_gamma(DType::kFloat32, {262143}, 0.5, 1.0, 11);
  grpc::ClientContext context;
  std::unique_ptr<RawStream> call = stub_->ScanStream(&context);
  ASSERT_TRUE(call->Write(header_for(gamma, 0)));
  v1::ScanStreamResponse answer;
  ASSERT_TRUE(call->Read(&answer));
  ASSERT_EQ(answer.accepted().max_chunk_bytes(), static_cast<std::int64_t>(gamma.data.size()));
  ASSERT_TRUE(call->Write(chunk_of(gamma.data)));
  call->WritesDone();
  client::HostTensor output{gamma.dtype, gamma.shape, {}};
  while (call->Read(&answer)) {
    if (answer.part_case() == v1::ScanStreamResponse::kChunk) output.data += answer.chunk();
  }
  ASSERT_TRUE(call->Finish().ok());
  EXPECT_TRUE(client::check_cumprod(gamma, output, 0).ok());

  // One byte over the tensor's size in a chunk: the error gives the chunk's size, not the
  // encoded message's.
  const auto small = client::random_gamma(DType::kFloat32, {1000}, 0.5, 1.0, 12);
  const auto status = converse({header_for(small, 0), chunk_of(small.data + "x")});
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("(4001 bytes)"));
}

TEST_F(StreamTest, AdmissionHappensBeforeAnyTensorByteAndCancellingFreesTheReservation) {
  // 6 MiB: one such stream with its result takes 12 of the 16 MiB budget.
  const auto gamma = client::random_gamma(DType::kFloat32, {4, 3072, 128}, 0.5, 1.0, 7);
  const auto header = header_for(gamma, 1);

  grpc::ClientContext holder_context;
  std::unique_ptr<RawStream> holder = stub_->ScanStream(&holder_context);
  ASSERT_TRUE(holder->Write(header));
  v1::ScanStreamResponse accepted;
  ASSERT_TRUE(holder->Read(&accepted));
  ASSERT_EQ(accepted.part_case(), v1::ScanStreamResponse::kAccepted);
  // Tag byte + a 3-byte length varint + the payload fill one 1 MiB message exactly.
  EXPECT_EQ(accepted.accepted().max_chunk_bytes(), kMaxMessageBytes - 4);
  // The holder sends its whole tensor but does not close its side: those 6 MiB are held.
  for (std::size_t offset = 0; offset < gamma.data.size(); offset += 1 << 19) {
    ASSERT_TRUE(holder->Write(chunk_of(gamma.data.substr(offset, 1 << 19))));
  }

  // The next stream no longer fits: it is refused at once, before it sends any byte.
  grpc::Status status;
  for (int attempt = 0; attempt < 50; ++attempt) {
    grpc::ClientContext context;
    std::unique_ptr<RawStream> refused = stub_->ScanStream(&context);
    ASSERT_TRUE(refused->Write(header));
    v1::ScanStreamResponse answer;
    if (refused->Read(&answer)) {  // the holder's bytes are still on their way
      context.TryCancel();
      refused->Finish();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    status = refused->Finish();
    break;
  }
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("--max-inflight-bytes"));

  // The holder goes away mid-stream: what it held is released.
  holder_context.TryCancel();
  holder->Finish();

  client::ScanResult result;
  for (int attempt = 0; attempt < 50; ++attempt) {
    status = stream(gamma, 1, 1 << 18, &result);
    if (status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(client::check_cumprod(gamma, result.result, 1).ok());
}

// The server's timing of a stream, like that of a unary Scan, leaves the network out: a client
// that takes its time sending the tensor does not make the scan look slow.
TEST_F(StreamTest, ServerTimingStartsWithTheLastChunk) {
  const auto gamma = client::random_gamma(DType::kFloat32, {4, 256}, 0.5, 1.0, fresh_seed());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  std::unique_ptr<RawStream> raw = stub_->ScanStream(&context);
  ASSERT_TRUE(raw->Write(header_for(gamma, 1)));
  v1::ScanStreamResponse answer;
  ASSERT_TRUE(raw->Read(&answer));
  ASSERT_EQ(answer.part_case(), v1::ScanStreamResponse::kAccepted);
  constexpr auto kSlowUpload = std::chrono::milliseconds(600);
  ASSERT_TRUE(raw->Write(chunk_of(gamma.data.substr(0, 1000))));
  std::this_thread::sleep_for(kSlowUpload);
  ASSERT_TRUE(raw->Write(chunk_of(gamma.data.substr(1000))));
  raw->WritesDone();
  ASSERT_TRUE(raw->Read(&answer));
  ASSERT_EQ(answer.part_case(), v1::ScanStreamResponse::kHeader);
  const v1::Timing& timing = answer.header().timing();
  EXPECT_LT(timing.total_us(),
            std::chrono::duration_cast<std::chrono::microseconds>(kSlowUpload).count());
  EXPECT_GE(timing.total_us(), timing.compute_us() + timing.queue_us());
  while (raw->Read(&answer)) {
  }
  EXPECT_TRUE(raw->Finish().ok());
}

TEST_F(StreamTest, ConcurrentStreamsEachGetTheirOwnAnswer) {
  constexpr int kClients = 8;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int index = 0; index < kClients; ++index) {
    threads.emplace_back([&, index] {
      client::Client own(target_);
      std::mt19937_64 generator(fresh_seed() + index);
      for (int request = 0; request < 4; ++request) {
        const std::int64_t length = 17 + static_cast<std::int64_t>(generator() % 400);
        const auto gamma = client::random_gamma(index % 2 ? DType::kBFloat16 : DType::kFloat32,
                                                {3, length, 16}, 0.5, 1.0, generator());
        client::ScanOptions options;
        options.dim = 1;
        options.timeout = std::chrono::seconds(60);
        options.stream_chunk_bytes = 64 + generator() % 20000;
        client::ScanResult result;
        grpc::Status status;
        // Eight at once may exceed the in-flight budget: a refusal is retried after a pause.
        for (int attempt = 0; attempt < 100; ++attempt) {
          status = own.Scan(gamma, options, &result);
          if (status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) break;
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        if (!status.ok() || !client::check_cumprod(gamma, result.result, 1).ok()) {
          ADD_FAILURE() << "client " << index << ": " << status.error_message();
          ++failures;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace scan

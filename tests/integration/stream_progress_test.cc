// ScanStream clients that stop halfway: a stream that sent only its header holds no budget, one
// that stops sending or reading is ended with DEADLINE_EXCEEDED and its memory released (seen in
// the metrics), and streams waiting for their clients hold no thread. Meanwhile honest clients
// keep being served, results checked against the float64 reference.
#include <gmock/gmock.h>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>

#include <random>
#include <thread>

#include "app/server.h"
#include "in_process_server.h"
#include "metrics_scrape.h"
#include "scan/client/scan_client.h"
#include "scan/wire/dtype.h"

namespace scan {
namespace {

using kernels::DType;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;
using RawStream = grpc::ClientReaderWriter<v1::ScanStreamRequest, v1::ScanStreamResponse>;

std::uint64_t fresh_seed() { return std::random_device{}(); }

v1::ScanStreamRequest header_for(DType dtype, const std::vector<std::int64_t>& shape, int dim) {
  v1::ScanStreamRequest message;
  v1::ScanRequest* header = message.mutable_header();
  header->mutable_gamma()->set_dtype(v1::to_wire_dtype(dtype));
  for (const auto size : shape) header->mutable_gamma()->add_shape(size);
  header->set_dim(dim);
  return message;
}

v1::ScanStreamRequest chunk_of(const std::string& bytes) {
  v1::ScanStreamRequest message;
  message.set_chunk(bytes);
  return message;
}

// Waits for the server to end a stream the client has stopped driving: its status, once it came
// within 5 s (the limits under test are well below that).
grpc::Status end_of(RawStream& stream) {
  const auto before = Clock::now();
  v1::ScanStreamResponse answer;
  while (stream.Read(&answer)) {
  }
  const grpc::Status status = stream.Finish();
  EXPECT_LT(Clock::now() - before, std::chrono::seconds(5));
  return status;
}

// An attacker's stream on a connection of its own: the header, `accepted`, and then whatever
// the test makes it do (or not do).
struct HeldStream {
  grpc::ClientContext context;
  std::unique_ptr<RawStream> stream;

  HeldStream(v1::ScanService::Stub& stub, const v1::ScanStreamRequest& header) {
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    stream = stub.ScanStream(&context);
    if (!stream->Write(header)) return;
    v1::ScanStreamResponse answer;
    accepted = stream->Read(&answer) && answer.part_case() == v1::ScanStreamResponse::kAccepted;
  }
  bool accepted = false;
};

class StreamProgressTest : public ::testing::Test {
 protected:
  // As in stream_test.cc: 1 MiB messages, 8 MiB tensors, and a 16 MiB budget, which one 8 MiB
  // stream with its result fills.
  static constexpr std::int64_t kMaxMessageBytes = std::int64_t{1} << 20;
  static constexpr std::int64_t kMaxTensorBytes = std::int64_t{8} << 20;
  static constexpr std::int64_t kBudgetBytes = 2 * kMaxTensorBytes;

  void start(double first_chunk_seconds, double idle_seconds, int rpc_threads = 0) {
    server::ServerConfig config = testing::loopback_config();
    config.metrics_listen = "127.0.0.1:0";
    config.max_tensor_bytes = kMaxTensorBytes;
    config.max_message_bytes = kMaxMessageBytes;
    config.max_inflight_bytes = kBudgetBytes;
    config.stream_chunk_bytes = 100000;
    config.worker_threads = 2;
    config.rpc_threads = rpc_threads;
    config.cpu_backend = "cpu-native";
    config.stream_first_chunk_timeout_seconds = first_chunk_seconds;
    config.stream_idle_timeout_seconds = idle_seconds;
    running_ = std::make_unique<testing::InProcessServer>(config);
    ASSERT_TRUE(running_->started());
    // Attackers get a connection of their own, as they would.
    attacker_ = v1::ScanService::NewStub(
        grpc::CreateChannel(running_->target(), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    attacker_.reset();
    running_.reset();
  }

  std::string scrape() { return testing::http_get(running_->server().metrics_port(), "/metrics"); }
  double metric(const std::string& series) { return testing::sample(scrape(), series); }

  // Polls until the series reads `value` (the server updates it as the call ends), up to 5 s.
  bool metric_reaches(const std::string& series, double value) {
    const auto give_up = Clock::now() + std::chrono::seconds(5);
    while (Clock::now() < give_up) {
      if (metric(series) == value) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  // An honest ScanStream and an honest Scan, both checked against the reference.
  void expect_honest_clients_served() {
    const auto large =
        client::random_gamma(DType::kFloat32, {2, 1536, 512}, 0.5, 1.0, fresh_seed());  // 6 MiB
    client::ScanOptions options;
    options.dim = 1;
    options.timeout = std::chrono::seconds(30);
    options.stream_chunk_bytes = std::size_t{1} << 18;
    client::ScanResult result;
    grpc::Status status = running_->client().Scan(large, options, &result);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_TRUE(client::check_cumprod(large, result.result, 1).ok());

    const auto small = client::random_gamma(DType::kFloat32, {256}, 0.5, 1.0, fresh_seed());
    options.dim = 0;
    options.stream_chunk_bytes = 0;
    status = running_->client().Scan(small, options, &result);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_TRUE(client::check_cumprod(small, result.result, 0).ok());
  }

  std::unique_ptr<testing::InProcessServer> running_;
  std::unique_ptr<v1::ScanService::Stub> attacker_;
};

// Two headers that each declare a tensor as large as the server takes: once they would have
// reserved the whole budget until their client went away. Now they hold nothing, and honest
// clients are served while they stay open (no timeout helps here: the limits are off).
TEST_F(StreamProgressTest, HeaderOnlyStreamsHoldNoBudget) {
  start(/*first_chunk_seconds=*/0, /*idle_seconds=*/0);
  const auto header = header_for(DType::kFloat32, {kMaxTensorBytes / 4}, 0);
  HeldStream first(*attacker_, header);
  HeldStream second(*attacker_, header);
  ASSERT_TRUE(first.accepted);
  ASSERT_TRUE(second.accepted);
  EXPECT_EQ(metric("scan_inflight_bytes"), 0);
  EXPECT_EQ(metric("scan_inflight_bytes_limit"), kBudgetBytes);
  expect_honest_clients_served();
  EXPECT_TRUE(metric_reaches("scan_inflight_bytes", 0));
  first.context.TryCancel();
  second.context.TryCancel();
}

// A stream holds budget for the bytes it was sent, no more: one that stopped halfway holds half.
TEST_F(StreamProgressTest, AStreamHoldsTheBytesItWasSentAndLosesThemWhenItStalls) {
  start(/*first_chunk_seconds=*/10, /*idle_seconds=*/0.5);
  const auto gamma = client::random_gamma(DType::kFloat32, {kMaxTensorBytes / 4}, 0.5, 1.0, 3);
  HeldStream held(*attacker_, header_for(DType::kFloat32, {kMaxTensorBytes / 4}, 0));
  ASSERT_TRUE(held.accepted);
  constexpr std::size_t kSent = 3 * 100000;
  for (std::size_t offset = 0; offset < kSent; offset += 100000) {
    ASSERT_TRUE(held.stream->Write(chunk_of(gamma.data.substr(offset, 100000))));
  }
  EXPECT_TRUE(metric_reaches("scan_inflight_bytes", kSent));
  // Honest clients are served meanwhile.
  expect_honest_clients_served();

  const grpc::Status status = end_of(*held.stream);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_THAT(status.error_message(), HasSubstr("after 300000 of 8388608 tensor bytes"));
  EXPECT_THAT(status.error_message(), HasSubstr("--stream-idle-timeout-seconds"));
  EXPECT_TRUE(metric_reaches("scan_inflight_bytes", 0));
  EXPECT_EQ(metric(R"(scan_stream_stalls_total{phase="upload"})"), 1);
}

TEST_F(StreamProgressTest, NoHeaderOrNoFirstChunkEndsTheStreamAfterTheFirstChunkTimeout) {
  start(/*first_chunk_seconds=*/0.3, /*idle_seconds=*/0);
  // The header never comes.
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    auto stream = attacker_->ScanStream(&context);
    const grpc::Status status = end_of(*stream);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
    EXPECT_THAT(status.error_message(), HasSubstr("header:"));
    EXPECT_THAT(status.error_message(), HasSubstr("--stream-first-chunk-timeout-seconds"));
  }
  // `accepted`, then nothing.
  {
    HeldStream held(*attacker_, header_for(DType::kFloat32, {1}, 0));
    ASSERT_TRUE(held.accepted);
    const grpc::Status status = end_of(*held.stream);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
    EXPECT_THAT(status.error_message(),
                HasSubstr("chunk: none arrived within 0.3 s of `accepted`"));
  }
  EXPECT_EQ(metric(R"(scan_stream_stalls_total{phase="header"})"), 1);
  EXPECT_EQ(metric(R"(scan_stream_stalls_total{phase="upload"})"), 1);
  EXPECT_EQ(metric(R"(scan_stream_stalls_total{phase="download"})"), 0);
  // A client that keeps moving is not cut, however long the whole stream takes.
  const auto gamma = client::random_gamma(DType::kFloat32, {4, 250}, 0.5, 1.0, fresh_seed());
  HeldStream slow(*attacker_, header_for(DType::kFloat32, {4, 250}, 1));
  ASSERT_TRUE(slow.accepted);
  for (int piece = 0; piece < 4; ++piece) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    ASSERT_TRUE(slow.stream->Write(chunk_of(gamma.data.substr(piece * 1000, 1000))));
  }
  slow.stream->WritesDone();
  client::HostTensor output{gamma.dtype, gamma.shape, {}};
  v1::ScanStreamResponse answer;
  while (slow.stream->Read(&answer)) {
    if (answer.part_case() == v1::ScanStreamResponse::kChunk) output.data += answer.chunk();
  }
  const grpc::Status status = slow.stream->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(client::check_cumprod(gamma, output, 1).ok());
}

// Upload everything, then never read the result: the result's memory is released once the
// client has taken nothing for the idle limit.
TEST_F(StreamProgressTest, AnUnreadResultIsDroppedAfterTheIdleTimeout) {
  start(/*first_chunk_seconds=*/10, /*idle_seconds=*/0.5);
  const auto gamma = client::random_gamma(DType::kFloat32, {kMaxTensorBytes / 4}, 0.5, 1.0, 5);
  HeldStream held(*attacker_, header_for(DType::kFloat32, {kMaxTensorBytes / 4}, 0));
  ASSERT_TRUE(held.accepted);
  for (std::size_t offset = 0; offset < gamma.data.size(); offset += 1 << 19) {
    ASSERT_TRUE(held.stream->Write(chunk_of(gamma.data.substr(offset, 1 << 19))));
  }
  held.stream->WritesDone();
  // The result was computed and is waiting for the client; then it is dropped.
  EXPECT_TRUE(metric_reaches(R"(scan_stream_stalls_total{phase="download"})", 1));
  EXPECT_TRUE(metric_reaches("scan_inflight_bytes", 0));
  expect_honest_clients_served();
  // What the client gets once it reads: part of the result, then an error, never OK.
  v1::ScanStreamResponse answer;
  std::size_t result_bytes = 0;
  while (held.stream->Read(&answer)) {
    if (answer.part_case() == v1::ScanStreamResponse::kChunk) result_bytes += answer.chunk().size();
  }
  const grpc::Status status = held.stream->Finish();
  EXPECT_FALSE(status.ok());
  EXPECT_LT(result_bytes, gamma.data.size());
}

// Streams waiting for their clients hold no thread: more of them than --rpc-threads leave room
// for everyone else.
TEST_F(StreamProgressTest, IdleStreamsBeyondTheHandlerThreadsDoNotLockOutOthers) {
  start(/*first_chunk_seconds=*/0, /*idle_seconds=*/0, /*rpc_threads=*/32);
  std::vector<std::unique_ptr<HeldStream>> idle;
  for (int index = 0; index < 40; ++index) {
    idle.push_back(std::make_unique<HeldStream>(*attacker_, header_for(DType::kFloat32, {1}, 0)));
    ASSERT_TRUE(idle.back()->accepted) << "stream " << index;
  }
  expect_honest_clients_served();
  for (auto& stream : idle) stream->context.TryCancel();
}

}  // namespace
}  // namespace scan

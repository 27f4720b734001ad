// Overload and shutdown against real scan-server processes on loopback: bounded memory, precise
// refusals, and no accepted request ever lost. Every loop here is bounded in count and time.
#include <gmock/gmock.h>
#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "scan/client/scan_client.h"
#include "server_process.h"

namespace scan {
namespace {

using Clock = std::chrono::steady_clock;
using testing::ServerProcess;

// Tallies outcomes by status code, and answers that were OK but wrong.
struct Tally {
  std::mutex mutex;
  std::map<grpc::StatusCode, int> by_code;
  std::map<std::string, int> messages;  // of failures, to tell gRPC's refusals from ours
  int wrong = 0;

  void add(const grpc::Status& status) {
    std::lock_guard<std::mutex> lock(mutex);
    ++by_code[status.error_code()];
    if (!status.ok()) ++messages[status.error_message().substr(0, 60)];
  }
  int count(grpc::StatusCode code) {
    std::lock_guard<std::mutex> lock(mutex);
    return by_code[code];
  }
  std::string describe() {
    std::lock_guard<std::mutex> lock(mutex);
    std::string text;
    for (const auto& [code, count] : by_code) {
      text += std::string(client::status_code_name(code)) + "=" + std::to_string(count) + " ";
    }
    text += "wrong=" + std::to_string(wrong);
    for (const auto& [message, count] : messages) {
      text += "\n  " + std::to_string(count) + " x " + message;
    }
    return text;
  }
};

// Which RPC carries a request: one Scan message, or ScanStream chunks.
enum class Rpc { kScan, kScanStream };
const char* rpc_name(Rpc rpc) { return rpc == Rpc::kScan ? "Scan" : "ScanStream"; }

// A request whose answer is known: decays of `shape`, scanned along dim 1, and the expected
// result bytes from the first answer verified against the float64 reference.
struct KnownScan {
  client::HostTensor gamma;
  v1::ScanRequest request;
  Rpc rpc = Rpc::kScan;
  std::shared_ptr<const std::string> payload;  // ScanStream sends it by reference, call after call

  explicit KnownScan(const std::vector<std::int64_t>& shape, Rpc via = Rpc::kScan) : rpc(via) {
    gamma = client::random_gamma(kernels::DType::kFloat32, shape, 0.5, 1.0, std::random_device{}());
    request.mutable_gamma()->set_dtype(v1::DATA_TYPE_FLOAT32);
    for (const auto size : shape) request.mutable_gamma()->add_shape(size);
    request.set_dim(1);
    if (rpc == Rpc::kScan) {
      request.mutable_gamma()->set_data(gamma.data);
    } else {
      payload = std::make_shared<const std::string>(gamma.data);
    }
  }

  // One call; Scan moves the data out of the request, so each call gets a copy.
  grpc::Status send(client::Client& client, v1::ScanResponse* response,
                    std::chrono::microseconds* round_trip) const {
    if (rpc == Rpc::kScanStream) {
      return client.ScanStream(request, payload, client::kDefaultStreamChunkBytes,
                               std::chrono::seconds(60), response, round_trip);
    }
    v1::ScanRequest copy = request;
    return client.Scan(&copy, std::chrono::seconds(60), response, round_trip);
  }

  bool correct(const v1::ScanResponse& response) const {
    client::HostTensor result{kernels::DType::kFloat32,
                              {response.result().shape().begin(), response.result().shape().end()},
                              response.result().data()};
    return client::check_cumprod(gamma, result, 1).ok();
  }
};

// Starts `threads` callers, each sending `known` in a closed loop through `client_of(index)` up to
// `calls` times or until `stop`, and tallying every outcome and every wrong answer.
std::vector<std::thread> start_callers(int threads, int calls,
                                       const std::function<client::Client&(int)>& client_of,
                                       const KnownScan& known, Tally& tally,
                                       const std::atomic<bool>& stop) {
  std::vector<std::thread> callers;
  for (int index = 0; index < threads; ++index) {
    // `client_of` by value: the caller's std::function is often a temporary.
    callers.emplace_back([&known, &tally, &stop, client_of, calls, index] {
      client::Client& client = client_of(index);
      for (int call = 0; call < calls && !stop; ++call) {
        v1::ScanResponse answer;
        std::chrono::microseconds round_trip{0};
        const grpc::Status status = known.send(client, &answer, &round_trip);
        tally.add(status);
        if (status.ok() && !known.correct(answer)) {
          std::lock_guard<std::mutex> lock(tally.mutex);
          ++tally.wrong;
        }
      }
    });
  }
  return callers;
}

class Overload : public ::testing::TestWithParam<Rpc> {};

TEST_P(Overload, TenTimesTheInflightBoundKeepsMemoryBoundedAndAnswersCorrectOrExhausted) {
  constexpr std::int64_t kTensorBytes = 16 << 20;
  constexpr std::int64_t kInflightBytes = 96 << 20;  // three requests with their responses
  constexpr int kClients = 24;                       // 24 x 2 x 16 MiB offered: 8x the bound
  ServerProcess server({"--cpu-backend", "cpu-native", "--max-tensor-bytes", "16Mi",
                        "--max-inflight-bytes", "96Mi", "--max-queue", "2", "--worker-threads", "2",
                        "--rpc-threads", "32"});
  ASSERT_TRUE(server.running());
  const KnownScan known({4, 1024, kTensorBytes / 4 / 4096}, GetParam());

  // Warm up once, and remember what a quiet server looks like.
  client::Client probe(server.target());
  v1::ScanResponse response;
  std::chrono::microseconds quiet{0};
  ASSERT_TRUE(known.send(probe, &response, &quiet).ok());
  ASSERT_TRUE(known.correct(response));
  const std::string expected = response.result().data();
  const std::int64_t baseline_rss = server.rss_bytes();

  Tally tally;
  const auto storm_end = Clock::now() + std::chrono::seconds(12);
  std::vector<std::thread> clients;
  for (int index = 0; index < kClients; ++index) {
    clients.emplace_back([&] {
      client::Client own(server.target());
      for (int call = 0; call < 40 && Clock::now() < storm_end; ++call) {
        v1::ScanResponse answer;
        std::chrono::microseconds round_trip{0};
        const grpc::Status status = known.send(own, &answer, &round_trip);
        tally.add(status);
        if (status.ok() && answer.result().data() != expected) {
          std::lock_guard<std::mutex> lock(tally.mutex);
          ++tally.wrong;
        }
      }
    });
  }
  for (auto& thread : clients) thread.join();
  const std::int64_t peak_rss = server.peak_rss_bytes();

  // Every answer is either the right one or a precise refusal.
  const int ok = tally.count(grpc::StatusCode::OK);
  const int exhausted = tally.count(grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(tally.wrong, 0) << tally.describe();
  EXPECT_GT(ok, 0) << tally.describe();
  EXPECT_GT(exhausted, 0) << "the storm never hit the bound: " << tally.describe();
  int total = 0;
  for (const auto& [code, count] : tally.by_code) total += count;
  EXPECT_EQ(ok + exhausted, total) << tally.describe();

  // Memory: the handler's in-flight bound, plus the idle buffers the server pools for reuse (up
  // to the in-flight bound again), plus a fixed 256 MiB for the runtime and the heap that the
  // server keeps instead of unmapping large buffers (transport.h). Scan adds what gRPC holds
  // before any handler runs: it assembles every arriving message whole, and the decoded copy
  // follows it, up to two messages per client sending at once. ScanStream takes the budget as
  // bytes arrive, so under overload a stream admitted by its header may be refused partway, after
  // its buffer has been partly written: up to one tensor per client sending at once. See
  // docs/reliability.md.
  const std::int64_t growth = peak_rss - baseline_rss;
  std::printf("overload (%s): %s; baseline RSS %lld MiB, peak %lld MiB (growth %lld MiB)\n",
              rpc_name(GetParam()), tally.describe().c_str(),
              static_cast<long long>(baseline_rss >> 20), static_cast<long long>(peak_rss >> 20),
              static_cast<long long>(growth >> 20));
  const std::int64_t per_client = GetParam() == Rpc::kScan ? 2 * kTensorBytes : kTensorBytes;
  EXPECT_LT(growth, 2 * kInflightBytes + kClients * per_client + (256 << 20));

  // Normal latency again within seconds of the storm.
  std::chrono::microseconds after{0};
  bool recovered = false;
  for (int attempt = 0; attempt < 10 && !recovered; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const grpc::Status status = known.send(probe, &response, &after);
    recovered = status.ok() && response.result().data() == expected &&
                after < 4 * quiet + std::chrono::milliseconds(200);
  }
  EXPECT_TRUE(recovered) << "quiet " << quiet.count() << " us, after the storm " << after.count()
                         << " us";
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait_exit(std::chrono::seconds(30)), 0);
}

class Shutdown : public ::testing::TestWithParam<Rpc> {};

TEST_P(Shutdown, SigtermUnderLoadLosesNoAcceptedRequest) {
  ServerProcess server({"--cpu-backend", "cpu-native", "--drain-delay-seconds", "1",
                        "--shutdown-grace-seconds", "15"});
  ASSERT_TRUE(server.running());
  const KnownScan known({2, 256, 512}, GetParam());  // 1 MiB

  Tally tally;
  std::atomic<bool> stop{false};
  std::vector<std::unique_ptr<client::Client>> own;  // one connection per caller
  for (int index = 0; index < 8; ++index) {
    own.push_back(std::make_unique<client::Client>(server.target()));
  }
  std::vector<std::thread> clients = start_callers(
      8, 2000, [&own](int index) -> client::Client& { return *own[index]; }, known, tally, stop);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  const int ok_before = tally.count(grpc::StatusCode::OK);
  const auto signalled = Clock::now();
  server.signal(SIGTERM);
  const int exit_code = server.wait_exit(std::chrono::seconds(20));
  const auto exited = Clock::now();
  // Keep calling a little after the exit, so refusals of the stopped server are seen too.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  stop = true;
  for (auto& thread : clients) thread.join();

  std::printf(
      "shutdown (%s): %s; exit after %lld ms\n", rpc_name(GetParam()), tally.describe().c_str(),
      static_cast<long long>(
          std::chrono::duration_cast<std::chrono::milliseconds>(exited - signalled).count()));
  EXPECT_EQ(exit_code, 0);
  EXPECT_EQ(tally.wrong, 0);
  // During the drain delay the server keeps serving.
  EXPECT_GT(tally.count(grpc::StatusCode::OK), ok_before) << tally.describe();
  // Accepted calls all completed: the only failures are refusals of calls the server never took.
  const int ok = tally.count(grpc::StatusCode::OK);
  const int refused = tally.count(grpc::StatusCode::UNAVAILABLE);
  int total = 0;
  for (const auto& [code, count] : tally.by_code) total += count;
  EXPECT_EQ(ok + refused, total) << tally.describe();
  EXPECT_GT(refused, 0) << tally.describe();
}

// Default flags, as `docker stop` or a bare `kill` meet the server: every call whose request had
// begun arriving when SIGTERM came is served, with no retry to hide a loss. (With
// --drain-delay-seconds 0, all 8 unary Scans got UNAVAILABLE; streams reach their handler with
// the header, so they were served either way.)
TEST_P(Shutdown, DefaultFlagsServeEveryCallWhoseUploadHadBegun) {
  ServerProcess server({"--cpu-backend", "cpu-native"});
  ASSERT_TRUE(server.running());
  // 16 MiB each; 4 MiB under TSan, which runs the server 5-15x slower: eight 16 MiB uploads then
  // outlast the default 2 s drain delay, and the calls that land after it are refused as they
  // should be (their upload had begun, but gRPC hands a call over only once all of it is in).
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
  const KnownScan known({4, 1024, 256}, GetParam());
#else
  const KnownScan known({4, 1024, 1024}, GetParam());
#endif
#else
  const KnownScan known({4, 1024, 1024}, GetParam());
#endif
  Tally tally;
  std::atomic<bool> stop{false};
  std::vector<std::unique_ptr<client::Client>> own;
  const KnownScan tiny({1, 4, 4});
  for (int index = 0; index < 8; ++index) {
    own.push_back(std::make_unique<client::Client>(server.target()));
    own.back()->set_max_attempts(1);
    // Connected before the clock starts: a call still connecting at SIGTERM has not begun.
    v1::ScanResponse warm;
    std::chrono::microseconds round_trip{0};
    ASSERT_TRUE(tiny.send(*own.back(), &warm, &round_trip).ok());
  }
  std::vector<std::thread> clients = start_callers(
      8, 1, [&own](int index) -> client::Client& { return *own[index]; }, known, tally, stop);
  // Mid-upload: 8 x 16 MiB take far longer than this to cross loopback.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  server.signal(SIGTERM);
  for (auto& thread : clients) thread.join();
  EXPECT_EQ(server.wait_exit(std::chrono::seconds(30)), 0);
  EXPECT_EQ(tally.count(grpc::StatusCode::OK), 8) << tally.describe();
  EXPECT_EQ(tally.wrong, 0);
}

// Streams that never sent a tensor byte lose nothing by being ended at shutdown, and must not hold
// it up: one idle stream once stretched SIGTERM to the whole 30 s grace period. Default flags;
// the exit must come well before even the 10 s first-chunk timeout would have ended the streams.
TEST(ShutdownWithIdleStreams, EndsThemWithUnavailableInsteadOfWaitingOutTheGrace) {
  ServerProcess server({"--cpu-backend", "cpu-native"});
  ASSERT_TRUE(server.running());
  auto stub = v1::ScanService::NewStub(
      grpc::CreateChannel(server.target(), grpc::InsecureChannelCredentials()));
  using RawStream = grpc::ClientReaderWriter<v1::ScanStreamRequest, v1::ScanStreamResponse>;
  grpc::ClientContext silent_context;  // never even sends its header
  std::unique_ptr<RawStream> silent = stub->ScanStream(&silent_context);
  grpc::ClientContext idle_context;  // sends its header, is accepted, then nothing
  std::unique_ptr<RawStream> idle = stub->ScanStream(&idle_context);
  v1::ScanStreamRequest header;
  header.mutable_header()->mutable_gamma()->set_dtype(v1::DATA_TYPE_FLOAT32);
  header.mutable_header()->mutable_gamma()->add_shape(1);
  ASSERT_TRUE(idle->Write(header));
  v1::ScanStreamResponse answer;
  ASSERT_TRUE(idle->Read(&answer));
  ASSERT_EQ(answer.part_case(), v1::ScanStreamResponse::kAccepted);

  const auto signalled = Clock::now();
  server.signal(SIGTERM);
  EXPECT_FALSE(idle->Read(&answer));
  const grpc::Status status = idle->Finish();
  std::printf("idle stream ended after %.2f s\n",
              std::chrono::duration<double>(Clock::now() - signalled).count());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_THAT(status.error_message(), ::testing::HasSubstr("retry on another replica"));
  EXPECT_FALSE(silent->Read(&answer));
  EXPECT_EQ(silent->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  std::printf("silent stream ended after %.2f s\n",
              std::chrono::duration<double>(Clock::now() - signalled).count());
  EXPECT_EQ(server.wait_exit(std::chrono::seconds(30)), 0);
  const auto took = Clock::now() - signalled;
  std::printf("SIGTERM with two idle streams: exit after %.2f s\n",
              std::chrono::duration<double>(took).count());
  EXPECT_LT(took, std::chrono::seconds(8));
}

// --warm-start (the default): before its port opens, the server pages in a buffer pool of every
// power of two up to --max-tensor-bytes, so it is resident from the start, and it serves requests
// of every size from it correctly.
TEST(WarmStart, PagesInTheBufferPoolBeforeServingAndServesEverySizeFromIt) {
  const std::vector<std::string> limits = {
      "--cpu-backend", "cpu-native", "--max-tensor-bytes", "32Mi", "--max-inflight-bytes", "128Mi"};
  std::vector<std::string> warm = limits, cold = limits;
  warm.insert(warm.end(), {"--warm-start", "true"});
  cold.insert(cold.end(), {"--warm-start", "false"});
  ServerProcess warm_server(warm), cold_server(cold);
  ASSERT_TRUE(warm_server.running());
  ASSERT_TRUE(cold_server.running());
  // 2 x (32 + 16 + 8 + 4 + 2 + 1) MiB = 126 MiB more resident before any request.
  const std::int64_t extra = warm_server.rss_bytes() - cold_server.rss_bytes();
  EXPECT_GT(extra, std::int64_t{100} << 20)
      << "warm " << warm_server.rss_bytes() << " B, cold " << cold_server.rss_bytes() << " B";
  // Not much more than the pool either; under TSan each byte written also writes shadow memory
  // (about 3x here), so the bound is for plain builds.
#if defined(__has_feature)
#if !__has_feature(thread_sanitizer)
  EXPECT_LT(extra, std::int64_t{200} << 20);
#endif
#else
  EXPECT_LT(extra, std::int64_t{200} << 20);
#endif
  client::Client client(warm_server.target());
  for (const std::int64_t length : {1, 1000, 4097, 65536, 262143}) {  // 128 B .. 32 MiB
    const KnownScan known({length, 32}, Rpc::kScan);
    v1::ScanResponse answer;
    std::chrono::microseconds round_trip{0};
    ASSERT_TRUE(known.send(client, &answer, &round_trip).ok()) << length;
    EXPECT_TRUE(known.correct(answer)) << length;
  }
}

class ReplicaLoss : public ::testing::TestWithParam<Rpc> {};

TEST_P(ReplicaLoss, KillingAndRestartingOneOfThreeReplicasFailsNoRequest) {
  const std::vector<std::string> args = {"--cpu-backend", "cpu-native"};
  std::vector<std::unique_ptr<ServerProcess>> replicas;
  std::string target = "ipv4:";
  for (int index = 0; index < 3; ++index) {
    replicas.push_back(std::make_unique<ServerProcess>(args));
    ASSERT_TRUE(replicas.back()->running());
    target += (index ? "," : "") + replicas.back()->target();
  }
  const KnownScan known({2, 128, 256}, GetParam());  // 256 KiB

  // One channel over all three addresses, as a client of a headless Service would have.
  client::Client shared(target);
  Tally tally;
  std::atomic<bool> stop{false};
  std::vector<std::thread> clients = start_callers(
      6, 5000, [&shared](int) -> client::Client& { return shared; }, known, tally, stop);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const int port = replicas[1]->port();
  replicas[1]->kill_now();
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const int ok_while_down = tally.count(grpc::StatusCode::OK);
  replicas[1] = std::make_unique<ServerProcess>(args, port);
  EXPECT_TRUE(replicas[1]->running());
  std::this_thread::sleep_for(std::chrono::seconds(2));
  stop = true;
  for (auto& thread : clients) thread.join();

  std::printf("replica loss (%s): %s\n", rpc_name(GetParam()), tally.describe().c_str());
  const int ok = tally.count(grpc::StatusCode::OK);
  int total = 0;
  for (const auto& [code, count] : tally.by_code) total += count;
  EXPECT_EQ(ok, total) << tally.describe();
  EXPECT_EQ(tally.wrong, 0);
  EXPECT_GT(ok, ok_while_down) << "no progress after the restart";
}

std::string test_name(const ::testing::TestParamInfo<Rpc>& param_info) {
  return rpc_name(param_info.param);
}
const auto kBothRpcs = ::testing::Values(Rpc::kScan, Rpc::kScanStream);
INSTANTIATE_TEST_SUITE_P(Rpcs, Overload, kBothRpcs, test_name);
INSTANTIATE_TEST_SUITE_P(Rpcs, Shutdown, kBothRpcs, test_name);
INSTANTIATE_TEST_SUITE_P(Rpcs, ReplicaLoss, kBothRpcs, test_name);

}  // namespace
}  // namespace scan

// The client library's transport over loopback against in-process servers built like scan-server
// (configure_transport + WireScanService): zero-copy calls both ways, status propagation, the
// callback API, round robin over replicas and dns:/// targets.
#include <gmock/gmock.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "rpc/wire_service.h"
#include "scan/client/scan_client.h"

namespace scan {
namespace {

// Echoes gamma as result under its own backend name, noting on which kind of thread it did; a
// request with dim 99 fails; one with dim 55 is refused with UNAVAILABLE (a replica going away),
// counted; one with dim 77 asks to wait (it is deferred where waiting is not allowed) and, where
// it may, blocks until `release` is set.
class Replica {
 public:
  explicit Replica(std::string name, server::WireOptions options = {})
      : name_(std::move(name)),
        service_(
            [this](grpc::ServerContextBase*, v1::ScanRequest* request, v1::ScanResponse* response,
                   server::Waiting waiting, wire::BufferPool&) -> server::HandlerResult {
              if (request->dim() == 99) {
                return {grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "dim: 99"), nullptr};
              }
              if (request->dim() == 55) {
                ++refused;
                return {grpc::Status(grpc::StatusCode::UNAVAILABLE, "going away"), nullptr};
              }
              if (request->dim() == 77 && waiting == server::Waiting::kNotAllowed) {
                return {grpc::Status::OK, std::make_shared<Deferred>(*this, request, response)};
              }
              return {echo(request, response, waiting), nullptr};
            },
            std::size_t{64} << 20, {}, options) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    server::configure_transport(builder, std::int64_t{64} << 20);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
  }
  ~Replica() { server_->Shutdown(std::chrono::system_clock::now()); }

  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }

  std::atomic<int> on_callback_thread{0}, on_own_threads{0}, blocked{0}, refused{0};
  std::atomic<bool> release{false};

 private:
  // The rest of a dim-77 call, finished on one of the transport's own threads.
  class Deferred final : public server::DeferredScan {
   public:
    Deferred(Replica& replica, v1::ScanRequest* request, v1::ScanResponse* response)
        : replica_(replica), request_(request), response_(response) {}
    grpc::Status resume() override {
      return replica_.echo(request_, response_, server::Waiting::kAllowed);
    }
    grpc::Status abandon(grpc::Status refusal) override { return refusal; }

   private:
    Replica& replica_;
    v1::ScanRequest* request_;
    v1::ScanResponse* response_;
  };

  grpc::Status echo(v1::ScanRequest* request, v1::ScanResponse* response, server::Waiting waiting) {
    if (request->dim() == 77) {
      ++blocked;
      while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ++(waiting == server::Waiting::kAllowed ? on_own_threads : on_callback_thread);
    response->mutable_result()->Swap(request->mutable_gamma());
    response->set_backend(name_);
    return grpc::Status::OK;
  }

  const std::string name_;
  server::WireScanService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

client::HostTensor tensor_of(std::int64_t elements) {
  return client::random_gamma(kernels::DType::kFloat32, {elements}, 0.5, 1.0, 7);
}

TEST(Transport, TensorsRoundTripThroughTheZeroCopyPath) {
  Replica replica("a");
  client::Client client(replica.target());
  for (const std::int64_t elements : {0, 1, 1000, (3 << 20) + 1}) {
    const auto gamma = tensor_of(elements);
    client::ScanResult result;
    client::ScanOptions options;
    options.timeout = std::chrono::seconds(30);
    const grpc::Status status = client.Scan(gamma, options, &result);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(result.backend, "a");
    EXPECT_EQ(result.result.shape, gamma.shape);
    EXPECT_EQ(result.result.data, gamma.data) << elements << " elements";
  }
}

TEST(Transport, HandlerErrorsReachTheClient) {
  Replica replica("a");
  client::Client client(replica.target());
  client::ScanResult result;
  client::ScanOptions options;
  options.dim = 99;
  const grpc::Status status = client.Scan(tensor_of(4), options, &result);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "dim: 99");
}

// A replica going away is sent the call again by default; a load generator that turns retries
// off (scan-bench without --retries) must see the first refusal, not a resent call.
TEST(Transport, UnavailableIsResentUnlessRetriesAreOff) {
  Replica replica("a");
  client::ScanOptions options;
  options.dim = 55;
  options.timeout = std::chrono::seconds(30);
  client::ScanResult result;
  client::RoundRobinClients no_retries({replica.target()}, {{GRPC_ARG_ENABLE_RETRIES, 0}});
  EXPECT_EQ(no_retries.next().Scan(tensor_of(4), options, &result).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(replica.refused.load(), 1);

  replica.refused = 0;
  client::Client retrying(replica.target());
  EXPECT_EQ(retrying.Scan(tensor_of(4), options, &result).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_GT(replica.refused.load(), 1);
}

TEST(Transport, SmallCallsRunOnTheCallbackThreadAndTheRestOnThreadsThatMayWait) {
  server::WireOptions options;
  options.inline_max_bytes = 64 << 10;
  Replica replica("a", options);
  client::Client client(replica.target());
  client::ScanResult result;
  ASSERT_TRUE(client.Scan(tensor_of(1000), {}, &result).ok());  // 4 KiB
  EXPECT_EQ(replica.on_callback_thread.load(), 1);
  ASSERT_TRUE(client.Scan(tensor_of(1 << 16), {}, &result).ok());  // 256 KiB: over the limit
  EXPECT_EQ(replica.on_own_threads.load(), 1);
  replica.release = true;
  client::ScanOptions waits;
  waits.dim = 77;  // small, but asks to wait: called again where it may
  ASSERT_TRUE(client.Scan(tensor_of(1000), waits, &result).ok());
  EXPECT_EQ(replica.on_own_threads.load(), 2);
  EXPECT_EQ(result.result.data, tensor_of(1000).data);
}

TEST(Transport, CallsBeyondTheBlockingThreadsAreRefusedAtOnce) {
  server::WireOptions options;
  options.blocking_threads = 2;
  Replica replica("a", options);
  // Two calls that wait hold both threads...
  std::vector<std::thread> holders;
  std::atomic<int> held_ok{0};
  for (int index = 0; index < 2; ++index) {
    holders.emplace_back([&] {
      client::Client own(replica.target());
      client::ScanOptions waits;
      waits.dim = 77;
      waits.timeout = std::chrono::seconds(30);
      client::ScanResult result;
      held_ok += own.Scan(tensor_of(16), waits, &result).ok();
    });
  }
  for (int poll = 0; poll < 400 && replica.blocked.load() < 2; ++poll) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(replica.blocked.load(), 2);
  // ... so a third is refused without waiting, while small calls still run on gRPC's thread.
  auto channel = client::make_channel(replica.target(), {{GRPC_ARG_ENABLE_RETRIES, 0}});
  client::Client third(channel);
  client::ScanOptions waits;
  waits.dim = 77;
  client::ScanResult result;
  const grpc::Status refused = third.Scan(tensor_of(16), waits, &result);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), ::testing::HasSubstr("--rpc-threads"));
  EXPECT_TRUE(third.Scan(tensor_of(16), {}, &result).ok());
  replica.release = true;
  for (auto& holder : holders) holder.join();
  EXPECT_EQ(held_ok.load(), 2);
}

TEST(Transport, StartScanAnswersThroughTheCallbackAndReusesThePayload) {
  Replica replica("a");
  client::Client client(replica.target());
  v1::ScanRequest header;
  header.mutable_gamma()->set_dtype(v1::DATA_TYPE_FLOAT32);
  header.mutable_gamma()->add_shape(1 << 18);
  const auto payload = std::make_shared<const std::string>(tensor_of(1 << 18).data);

  std::mutex mutex;
  std::condition_variable finished;
  int done = 0, matching = 0;
  constexpr int kCalls = 8;
  for (int call = 0; call < kCalls; ++call) {
    client.StartScan(header, payload, std::chrono::seconds(30),
                     [&](const grpc::Status& status, v1::ScanResponse& response) {
                       std::lock_guard<std::mutex> lock(mutex);
                       matching += status.ok() && response.result().data() == *payload;
                       ++done;
                       finished.notify_all();
                     });
  }
  std::unique_lock<std::mutex> lock(mutex);
  ASSERT_TRUE(finished.wait_for(lock, std::chrono::seconds(30), [&] { return done == kCalls; }));
  EXPECT_EQ(matching, kCalls);
}

TEST(Transport, RoundRobinClientsAlternateBetweenReplicas) {
  Replica a("a"), b("b");
  client::RoundRobinClients clients(client::split_targets(a.target() + ",," + b.target()));
  ASSERT_EQ(clients.size(), 2u);
  std::map<std::string, int> answered;
  for (int call = 0; call < 10; ++call) {
    client::ScanResult result;
    ASSERT_TRUE(clients.next().Scan(tensor_of(16), {}, &result).ok());
    ++answered[result.backend];
  }
  EXPECT_EQ(answered["a"], 5);
  EXPECT_EQ(answered["b"], 5);
}

TEST(Transport, DnsTargetsAndMultiAddressTargetsWork) {
  Replica a("a"), b("b");
  client::ScanResult result;
  client::Client by_name("dns:///localhost:" + std::to_string(a.port()));
  ASSERT_TRUE(by_name.Scan(tensor_of(16), {}, &result).ok());
  EXPECT_EQ(result.backend, "a");

  // One channel over two addresses: make_channel's round_robin policy uses both.
  client::Client both("ipv4:127.0.0.1:" + std::to_string(a.port()) +
                      ",127.0.0.1:" + std::to_string(b.port()));
  std::map<std::string, int> answered;
  for (int call = 0; call < 20; ++call) {
    ASSERT_TRUE(both.Scan(tensor_of(16), {}, &result).ok());
    ++answered[result.backend];
  }
  EXPECT_GT(answered["a"], 0);
  EXPECT_GT(answered["b"], 0);
}

TEST(Transport, ParsesChannelArguments) {
  transport::ChannelArgs args;
  EXPECT_TRUE(transport::parse_channel_arg("grpc.http2.bdp_probe=1", &args));
  EXPECT_TRUE(transport::parse_channel_arg("grpc.x=0x10", &args));
  ASSERT_EQ(args.size(), 2u);
  EXPECT_EQ(args[0], std::make_pair(std::string("grpc.http2.bdp_probe"), 1));
  EXPECT_EQ(args[1].second, 16);
  for (const char* bad : {"", "=1", "grpc.x=", "grpc.x", "grpc.x=1.5", "grpc.x=99999999999"}) {
    EXPECT_FALSE(transport::parse_channel_arg(bad, &args)) << bad;
  }
}

}  // namespace
}  // namespace scan

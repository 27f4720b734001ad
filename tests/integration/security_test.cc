// TLS, mutual TLS and bearer tokens, end to end over loopback with throwaway certificates.
#include "rpc/security.h"

#include <gmock/gmock.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "app/server.h"
#include "scan/client/scan_client.h"
#include "scan/client/shared_memory.h"

#ifndef SCAN_TEST_CERT_SCRIPT
#error "SCAN_TEST_CERT_SCRIPT must name make_test_certs.sh"
#endif

namespace scan {
namespace {

using ::testing::HasSubstr;

std::string slurp(const std::filesystem::path& path) {
  std::string text;
  EXPECT_TRUE(server::read_file(path.string(), &text)) << path;
  return text;
}

class SecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    certs_ = new std::filesystem::path(std::filesystem::temp_directory_path() /
                                       ("scan-certs-" + std::to_string(std::random_device{}())));
    const std::string command = std::string(SCAN_TEST_CERT_SCRIPT) + " " + certs_->string();
    ASSERT_EQ(std::system(command.c_str()), 0) << "openssl certificate generation failed";
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*certs_);
    delete certs_;
  }

  void start(server::ServerConfig config) {
    config.listen = "127.0.0.1:0";
    config.metrics_listen = "";
    config.cpu_backend = "cpu-native";
    server_ = std::make_unique<server::ScanServer>(config, server::compose_backends(config));
    ASSERT_TRUE(server_->start());
  }
  server::ServerConfig tls_config(bool mutual) const {
    server::ServerConfig config;
    config.drain_delay_seconds = 0;  // no drain to wait for in-process
    config.warm_start = false;
    config.tls_cert = (*certs_ / "server.crt").string();
    config.tls_key = (*certs_ / "server.key").string();
    if (mutual) config.tls_client_ca = (*certs_ / "ca.crt").string();
    return config;
  }
  std::string target() const { return "localhost:" + std::to_string(server_->port()); }

  std::shared_ptr<grpc::Channel> tls_channel(const std::string& client_name = "") const {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = slurp(*certs_ / "ca.crt");
    if (!client_name.empty()) {
      options.pem_private_key = slurp(*certs_ / (client_name + ".key"));
      options.pem_cert_chain = slurp(*certs_ / (client_name + ".crt"));
    }
    return grpc::CreateChannel(target(), grpc::SslCredentials(options));
  }

  // A fresh random bearer token in the file `name` under the certificates' directory, and a
  // config that requires it.
  server::ServerConfig config_requiring_token(const std::string& name, std::string* token) const {
    const auto token_file = *certs_ / name;
    *token = "s3cret-token-" + std::to_string(std::random_device{}());
    std::ofstream(token_file) << *token << "\n";
    server::ServerConfig config;
    config.drain_delay_seconds = 0;  // no drain to wait for in-process
    config.warm_start = false;
    config.auth_token_file = token_file.string();
    return config;
  }

  // One small scan over `channel`, with `token` as bearer token when not empty, and with the
  // warm-up header holding `warm_up` when that is set.
  static grpc::Status scan_over(const std::shared_ptr<grpc::Channel>& channel,
                                const std::string& token = "",
                                const std::optional<std::string>& warm_up = std::nullopt) {
    auto stub = v1::ScanService::NewStub(channel);
    v1::ScanRequest request;
    request.mutable_gamma()->set_dtype(v1::DATA_TYPE_FLOAT32);
    request.mutable_gamma()->add_shape(4);
    const float values[] = {0.5f, 0.5f, 0.5f, 0.5f};
    request.mutable_gamma()->set_data(values, sizeof values);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    if (warm_up) context.AddMetadata(server::ScanServiceImpl::kWarmUpHeader, *warm_up);
    v1::ScanResponse response;
    grpc::Status status = stub->Scan(&context, request, &response);
    if (status.ok()) {
      float result[4];
      EXPECT_EQ(response.result().data().size(), sizeof result);
      std::memcpy(result, response.result().data().data(), sizeof result);
      EXPECT_EQ(result[3], 0.0625f);
    }
    return status;
  }

  static std::filesystem::path* certs_;
  std::unique_ptr<server::ScanServer> server_;
};

std::filesystem::path* SecurityTest::certs_ = nullptr;

TEST_F(SecurityTest, TlsServesTlsClientsAndRefusesPlaintext) {
  start(tls_config(false));
  EXPECT_TRUE(scan_over(tls_channel()).ok());
  const auto plaintext = grpc::CreateChannel(target(), grpc::InsecureChannelCredentials());
  EXPECT_EQ(scan_over(plaintext).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(SecurityTest, MutualTlsRequiresAClientCertificateFromTheTrustedCa) {
  server::ServerConfig config = tls_config(true);
  config.warm_start = true;
  config.max_tensor_bytes = 1 << 20;
  start(config);
  // No certificate of its own to call its listener with: warm start goes in process.
  EXPECT_EQ(server_->warm_up().target, "");
  EXPECT_GT(server_->warm_up().calls, 0);
  EXPECT_EQ(server_->warm_up().answered, server_->warm_up().calls);
  EXPECT_TRUE(scan_over(tls_channel("client")).ok());
  EXPECT_EQ(scan_over(tls_channel()).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(scan_over(tls_channel("stranger")).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(SecurityTest, BearerTokenGuardsScanButNotHealth) {
  std::string token;
  start(config_requiring_token("token", &token));
  const auto channel = grpc::CreateChannel(target(), grpc::InsecureChannelCredentials());

  EXPECT_TRUE(scan_over(channel, token).ok());
  const grpc::Status missing = scan_over(channel);
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(missing.error_message(), HasSubstr("authorization"));
  const grpc::Status wrong = scan_over(channel, token + "x");
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(wrong.error_message(), ::testing::Not(HasSubstr(token)));
  EXPECT_EQ(scan_over(channel, token.substr(0, token.size() - 1) + "!").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  // ScanStream is guarded the same way, before the server accepts any tensor bytes.
  client::Client streamer(channel);
  client::ScanOptions options;
  options.stream_chunk_bytes = 24;
  options.timeout = std::chrono::seconds(10);
  const auto gamma = client::random_gamma(kernels::DType::kFloat32, {64}, 0.5, 1.0, 3);
  client::ScanResult result;
  EXPECT_EQ(streamer.Scan(gamma, options, &result).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  streamer.set_auth_token(token);
  ASSERT_TRUE(streamer.Scan(gamma, options, &result).ok());
  EXPECT_TRUE(client::check_cumprod(gamma, result.result, 0).ok());

  client::Client probe(channel);
  bool serving = false;
  ASSERT_TRUE(probe.CheckHealth("scan.v1.ScanService", &serving).ok());
  EXPECT_TRUE(serving);
}

// Warm start's own Scan calls (over the server's own listener, before SERVING) get past the bearer
// token without it, are answered, and leave no trace in the request metrics or the routing cost
// model; the header they carry grants nothing to a client that does not hold their per-process
// random token.
TEST_F(SecurityTest, WarmStartCallsPassUncountedAndTheirHeaderGrantsNothing) {
  std::string token;
  server::ServerConfig config = config_requiring_token("warm-token", &token);
  config.warm_start = true;
  config.max_tensor_bytes = 1 << 20;  // a small pool to page in
  config.gpu = "off";                 // CPU calls only: 4 dtypes, twice each
  start(config);
  // Over several connections to the listener, so that gRPC's own threads serve them, each
  // connection sending the 4 dtypes twice.
  const server::ScanServer::WarmUpTally& warm_up = server_->warm_up();
  EXPECT_EQ(warm_up.target, "127.0.0.1:" + std::to_string(server_->port()));
  EXPECT_EQ(warm_up.connections,
            static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 8u)));
  EXPECT_EQ(warm_up.calls, 8 * warm_up.connections);
  EXPECT_EQ(warm_up.answered, warm_up.calls) << warm_up.first_failure;
  const server::RequestTotals before = server_->metrics().totals();
  EXPECT_EQ(before.succeeded.count + before.failed.count, 0u);
  const auto cost_source = [this, &token] {
    client::Client probe(target());
    probe.set_auth_token(token);
    v1::GetServerInfoResponse info;
    EXPECT_TRUE(probe.GetServerInfo(&info).ok());
    return info.backends_size() > 0 ? info.backends(0).cost_model().source() : "";
  };
  EXPECT_NE(cost_source(), "observed");

  const auto channel = grpc::CreateChannel(target(), grpc::InsecureChannelCredentials());
  for (const std::string& guess : std::vector<std::string>{"", "0", std::string(32, '0'), token}) {
    EXPECT_EQ(scan_over(channel, "", guess).error_code(), grpc::StatusCode::UNAUTHENTICATED)
        << guess;
  }
  EXPECT_TRUE(scan_over(channel, token, std::string(32, 'f')).ok());
  const server::RequestTotals after = server_->metrics().totals();
  EXPECT_EQ(after.succeeded.count, 1u);
  EXPECT_EQ(after.failed.count, 4u);
  EXPECT_EQ(cost_source(), "observed");  // a client's call does teach the model

  // With a tensor limit below the warm-up's usual 64-128 KiB, the calls shrink to fit it. They
  // are answered over TCP: gRPC's memory quota once was the in-flight bound alone (4 KiB here),
  // and gRPC reset every stream before the handler ran.
  for (const std::int64_t limit : {std::int64_t{1000}, std::int64_t{20000}}) {
    server::ServerConfig small = config;
    small.listen = "127.0.0.1:0";
    small.metrics_listen = "";
    small.max_tensor_bytes = limit;
    server::ScanServer tiny(small, server::compose_backends(small));
    ASSERT_TRUE(tiny.start());
    EXPECT_EQ(tiny.warm_up().answered, 8 * tiny.warm_up().connections) << limit;
    tiny.shutdown();
    tiny.wait();
  }
}

TEST_F(SecurityTest, UnreadableOrShortSecretsStopTheServerFromStarting) {
  server::ServerConfig config = tls_config(false);
  config.tls_key = (*certs_ / "missing.key").string();
  config.listen = "127.0.0.1:0";
  config.metrics_listen = "";
  server::ScanServer missing_key(config, server::compose_backends(config));
  EXPECT_FALSE(missing_key.start());

  const auto short_token = *certs_ / "short-token";
  std::ofstream(short_token) << "abc\n";
  server::ServerConfig token_config;
  token_config.listen = "127.0.0.1:0";
  token_config.metrics_listen = "";
  token_config.auth_token_file = short_token.string();
  server::ScanServer weak(token_config, server::compose_backends(token_config));
  EXPECT_FALSE(weak.start());
}

// Under mutual TLS, shared-memory regions belong to the client certificate that registered them:
// another client of the same CA neither sees nor reaches them, and may use the same name.
TEST_F(SecurityTest, SharedMemoryRegionsArePrivateToTheClientCertificate) {
  server::ServerConfig config = tls_config(true);
  config.allow_shared_memory = true;
  start(config);
  std::string error;
  auto object = client::SystemSharedMemory::create(
      client::SystemSharedMemory::unique_key("security"), 4096, &error);
  ASSERT_NE(object, nullptr) << error;
  const auto call = [](const std::shared_ptr<grpc::Channel>& channel, auto method,
                       const auto& request, auto* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return (*v1::ScanService::NewStub(channel).*method)(&context, request, response);
  };
  v1::RegisterSharedMemoryRequest registration;
  registration.set_name("r");
  registration.set_kind(v1::SHARED_MEMORY_KIND_SYSTEM);
  registration.set_key(object->key());
  registration.set_byte_size(4096);
  v1::RegisterSharedMemoryResponse registered;
  const auto alice = tls_channel("client");
  const auto bob = tls_channel("client2");
  ASSERT_TRUE(
      call(alice, &v1::ScanService::Stub::RegisterSharedMemory, registration, &registered).ok());

  v1::ListSharedMemoryResponse listed;
  ASSERT_TRUE(
      call(bob, &v1::ScanService::Stub::ListSharedMemory, v1::ListSharedMemoryRequest(), &listed)
          .ok());
  EXPECT_EQ(listed.regions_size(), 0);
  v1::ScanRequest request;
  request.mutable_gamma()->set_dtype(v1::DATA_TYPE_FLOAT32);
  request.mutable_gamma()->add_shape(4);
  *request.mutable_gamma()->mutable_shared_memory() = client::shared_memory_reference("r", 0, 16);
  v1::ScanResponse response;
  const grpc::Status guessed = call(bob, &v1::ScanService::Stub::Scan, request, &response);
  EXPECT_EQ(guessed.error_code(), grpc::StatusCode::NOT_FOUND) << guessed.error_message();
  v1::UnregisterSharedMemoryRequest removal;
  removal.set_name("r");
  v1::UnregisterSharedMemoryResponse removed;
  EXPECT_EQ(
      call(bob, &v1::ScanService::Stub::UnregisterSharedMemory, removal, &removed).error_code(),
      grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(
      call(bob, &v1::ScanService::Stub::RegisterSharedMemory, registration, &registered).ok())
      << "the name is Alice's only";

  const float values[] = {0.5f, 0.5f, 0.5f, 0.5f};
  std::memcpy(object->data(), values, sizeof values);
  ASSERT_TRUE(call(alice, &v1::ScanService::Stub::Scan, request, &response).ok());
  float result[4];
  std::memcpy(result, response.result().data().data(), sizeof result);
  EXPECT_EQ(result[3], 0.0625f);
}

}  // namespace
}  // namespace scan

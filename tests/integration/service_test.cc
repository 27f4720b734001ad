// A real server on an ephemeral loopback port, driven through the real client library.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <thread>

#include "app/server.h"
#include "in_process_server.h"
#include "scan/client/scan_client.h"

namespace scan {
namespace {

using kernels::DType;
using ::testing::HasSubstr;

// Parameter: the server's --cpu-backend, so every case runs against each CPU backend and the
// calibrated choice between them.
class ServiceTest : public ::testing::TestWithParam<const char*> {
 protected:
  static constexpr std::int64_t kMaxTensorBytes = std::int64_t{32} << 20;

  void SetUp() override {
    server::ServerConfig config = testing::loopback_config();
    config.max_tensor_bytes = kMaxTensorBytes;
    config.worker_threads = 2;
    config.cpu_backend = GetParam();
    running_ = std::make_unique<testing::InProcessServer>(config);
    ASSERT_TRUE(running_->started());
    client_ = &running_->client();
  }

  void TearDown() override { running_.reset(); }

  grpc::Status scan(const client::HostTensor& gamma, int dim, client::ScanResult* result,
                    v1::BackendPreference backend = v1::BACKEND_PREFERENCE_AUTO) {
    client::ScanOptions options;
    options.dim = dim;
    options.backend = backend;
    options.timeout = std::chrono::seconds(60);
    return client_->Scan(gamma, options, result);
  }

  static std::uint64_t fresh_seed() { return std::random_device{}(); }

  std::unique_ptr<testing::InProcessServer> running_;
  client::Client* client_ = nullptr;
};

TEST_P(ServiceTest, HealthIsServingForServerAndScanService) {
  bool serving = false;
  ASSERT_TRUE(client_->CheckHealth("", &serving).ok());
  EXPECT_TRUE(serving);
  ASSERT_TRUE(client_->CheckHealth("scan.v1.ScanService", &serving).ok());
  EXPECT_TRUE(serving);
}

TEST_P(ServiceTest, ScansEveryDtypeCorrectlyWithTimingAndBackend) {
  for (const DType dtype : {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16}) {
    const auto gamma = client::random_gamma(dtype, {2, 3, 257, 16}, 0.5, 1.0, fresh_seed());
    client::ScanResult result;
    const grpc::Status status = scan(gamma, 2, &result);
    ASSERT_TRUE(status.ok()) << status.error_message();
    if (std::string(GetParam()) == "auto") {
      EXPECT_THAT(result.backend, ::testing::AnyOf("cpu-native", "cpu-torch"));
    } else {
      EXPECT_EQ(result.backend, GetParam());
    }
    EXPECT_EQ(result.result.dtype, dtype);
    EXPECT_EQ(result.result.shape, gamma.shape);
    EXPECT_GE(result.server_timing.compute_us(), 0);
    EXPECT_GE(result.server_timing.total_us(),
              result.server_timing.compute_us() + result.server_timing.queue_us());
    const auto comparison = client::check_cumprod(gamma, result.result, 2);
    EXPECT_TRUE(comparison.ok()) << kernels::dtype_name(dtype) << ": " << comparison.mismatches;
  }
}

TEST_P(ServiceTest, NegativeDimMatchesPositiveDim) {
  const auto gamma = client::random_gamma(DType::kFloat32, {4, 9, 6}, 0.5, 1.0, fresh_seed());
  client::ScanResult negative, positive;
  ASSERT_TRUE(scan(gamma, -1, &negative).ok());
  ASSERT_TRUE(scan(gamma, 2, &positive).ok());
  // Under "auto" the two calls may be routed to different backends, whose float32 results may
  // differ in the last bit (LibTorch accumulates in double): bytes match only on one backend.
  if (negative.backend == positive.backend) {
    EXPECT_EQ(negative.result.data, positive.result.data);
  }
  EXPECT_TRUE(client::check_cumprod(gamma, negative.result, 2).ok());
  EXPECT_TRUE(client::check_cumprod(gamma, positive.result, 2).ok());
}

TEST_P(ServiceTest, ZeroElementTensorGivesEmptyResult) {
  client::HostTensor gamma{DType::kFloat32, {3, 0, 5}, {}};
  client::ScanResult result;
  ASSERT_TRUE(scan(gamma, 1, &result).ok());
  EXPECT_EQ(result.result.shape, gamma.shape);
  EXPECT_TRUE(result.result.data.empty());
}

TEST_P(ServiceTest, ErrorCodesReachTheClientNamingTheField) {
  client::ScanResult result;
  auto gamma = client::random_gamma(DType::kFloat32, {4, 8}, 0.5, 1.0, fresh_seed());

  grpc::Status status = scan(gamma, 2, &result);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("dim"));

  auto truncated = gamma;
  truncated.data.resize(truncated.data.size() - 3);
  status = scan(truncated, 0, &result);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("gamma.data"));

  status = scan(gamma, 0, &result, v1::BACKEND_PREFERENCE_GPU);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("GPU"));
}

TEST_P(ServiceTest, TensorAtTheLimitIsServedAndOneElementMoreIsRefused) {
  const std::int64_t at_limit = kMaxTensorBytes / 4;
  const auto gamma =
      client::random_gamma(DType::kFloat32, {at_limit / 1024, 1024}, 0.5, 1.0, fresh_seed());
  client::ScanResult result;
  grpc::Status status = scan(gamma, 1, &result);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(client::check_cumprod(gamma, result.result, 1).ok());

  const auto over = client::random_gamma(DType::kFloat32, {at_limit + 1}, 0.5, 1.0, 1);
  status = scan(over, 0, &result);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("gamma"));
}

TEST_P(ServiceTest, MessageOverTheTransportLimitIsRefusedByGrpc) {
  // Far beyond max_tensor_bytes + 1 MiB: gRPC itself rejects it before the handler runs.
  const auto huge = client::random_gamma(DType::kFloat32, {(kMaxTensorBytes / 4) * 2}, 0.5, 1.0, 1);
  client::ScanResult result;
  EXPECT_EQ(scan(huge, 0, &result).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // ... and the server keeps serving.
  const auto small = client::random_gamma(DType::kFloat32, {8}, 0.5, 1.0, 1);
  EXPECT_TRUE(scan(small, 0, &result).ok());
}

TEST_P(ServiceTest, SixteenConcurrentClientsEachGetTheirOwnCorrectAnswer) {
  constexpr int kClients = 16;
  constexpr int kRequestsEach = 6;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  const std::string target = running_->target();
  for (int index = 0; index < kClients; ++index) {
    threads.emplace_back([&, index] {
      client::Client own_client(target);  // own channel: separate connections, like real users
      std::mt19937_64 generator(fresh_seed() + index);
      const DType dtypes[] = {DType::kFloat32, DType::kBFloat16, DType::kFloat64, DType::kFloat16};
      for (int request = 0; request < kRequestsEach; ++request) {
        // Different shapes and dtypes per request, so that crossed answers cannot pass.
        const std::int64_t length = 17 + static_cast<std::int64_t>(generator() % 300);
        const DType dtype = dtypes[(index + request) % 4];
        const auto gamma = client::random_gamma(dtype, {2, length, 24}, 0.5, 1.0, generator());
        client::ScanOptions options;
        options.dim = 1;
        options.timeout = std::chrono::seconds(60);
        client::ScanResult result;
        const grpc::Status status = own_client.Scan(gamma, options, &result);
        if (!status.ok()) {
          ADD_FAILURE() << "client " << index << ": " << status.error_message();
          ++failures;
        } else if (!client::check_cumprod(gamma, result.result, 1).ok()) {
          ADD_FAILURE() << "client " << index << " got a wrong answer";
          ++failures;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_P(ServiceTest, ShutdownMarksHealthNotServingAndRefusesNewCalls) {
  running_->server().shutdown();
  running_->server().wait();
  bool serving = true;
  EXPECT_FALSE(client_->CheckHealth("", &serving, std::chrono::seconds(2)).ok() && serving);
}

// Products that end in float32's subnormal range (0.75^330 is 6.6e-42): the CPU backends flush
// them to 0 by default, say so in GetServerInfo, and keep them exact with
// --cpu-flush-subnormals=false. (Float products of decays above 0.5 never reach zero at all: they
// stick in the subnormal range, where every multiply takes the CPU's slow path.)
// The default flushing is of results only (FTZ, not DAZ): a subnormal input is read exactly on
// every CPU backend, so [1e30, 1e-40] is [1e30, 1e-10] and [inf, 1e-40] is [inf, inf].
TEST_P(ServiceTest, FlushingReadsSubnormalInputsExactly) {
  const float tiny = 1e-40f;
  ASSERT_EQ(std::fpclassify(tiny), FP_SUBNORMAL);
  for (const float first : {1e30f, std::numeric_limits<float>::infinity()}) {
    client::HostTensor gamma{DType::kFloat32, {2}, {}};
    const float values[] = {first, tiny};
    gamma.data.assign(reinterpret_cast<const char*>(values), sizeof values);
    client::ScanOptions options;
    options.dim = 0;
    options.backend = v1::BACKEND_PREFERENCE_CPU;
    client::ScanResult result;
    const grpc::Status status = client_->Scan(gamma, options, &result);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(result.result.data.size(), sizeof values);
    float last = 0;
    std::memcpy(&last, result.result.data.data() + sizeof(float), sizeof last);
    EXPECT_FLOAT_EQ(last, static_cast<float>(double{first} * double{tiny}))
        << first << " on " << result.backend;
  }
}

TEST_P(ServiceTest, SubnormalResultsAreFlushedByDefaultAndExactWhenConfigured) {
  constexpr int kLength = 330;
  constexpr int kLanes = 8;
  client::HostTensor gamma{DType::kFloat32, {1, kLength, kLanes}, {}};
  const std::vector<float> decays(kLength * kLanes, 0.75f);
  gamma.data.assign(reinterpret_cast<const char*>(decays.data()), decays.size() * sizeof(float));
  float sequential = 1.0f;
  for (int step = 0; step < kLength; ++step) sequential *= 0.75f;
  ASSERT_EQ(std::fpclassify(sequential), FP_SUBNORMAL);

  struct Outcome {
    std::string backend;
    bool flushing = false;
    float last = -1;
  };
  auto scan_on = [&](client::Client& client) {
    client::ScanOptions options;
    options.dim = 1;
    options.backend = v1::BACKEND_PREFERENCE_CPU;
    client::ScanResult result;
    const grpc::Status status = client.Scan(gamma, options, &result);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_TRUE(client::check_cumprod(gamma, result.result, 1).ok());
    Outcome outcome;
    outcome.backend = result.backend;
    v1::GetServerInfoResponse info;
    EXPECT_TRUE(client.GetServerInfo(&info).ok());
    for (const auto& backend : info.backends()) {
      if (backend.name() == result.backend) outcome.flushing = backend.flushes_subnormals();
    }
    if (result.result.data.size() == decays.size() * sizeof(float)) {
      std::memcpy(&outcome.last,
                  result.result.data.data() + result.result.data.size() - sizeof(float),
                  sizeof(float));
    }
    return outcome;
  };

  const Outcome flushed = scan_on(*client_);
  EXPECT_EQ(flushed.last, 0.0f) << flushed.backend;
  EXPECT_TRUE(flushed.flushing) << flushed.backend;

  server::ServerConfig exact_config = testing::loopback_config();
  exact_config.worker_threads = 2;
  exact_config.cpu_backend = GetParam();
  exact_config.cpu_flush_subnormals = false;
  testing::InProcessServer exact_server(exact_config);
  ASSERT_TRUE(exact_server.started());
  const Outcome exact = scan_on(exact_server.client());
  EXPECT_FALSE(exact.flushing) << exact.backend;
  EXPECT_EQ(std::fpclassify(exact.last), FP_SUBNORMAL) << exact.backend << ": " << exact.last;
  // cpu-native multiplies in float like the loop above; LibTorch may accumulate in double.
  if (exact.backend == "cpu-native") {
    EXPECT_EQ(exact.last, sequential);
  }
}

INSTANTIATE_TEST_SUITE_P(CpuBackends, ServiceTest,
                         ::testing::Values("auto", "cpu-native", "cpu-torch"),
                         [](const auto& param_info) {
                           std::string name = param_info.param;
                           name.erase(std::remove(name.begin(), name.end(), '-'), name.end());
                           return name;
                         });

}  // namespace
}  // namespace scan

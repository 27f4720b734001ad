// Known requests in, exact series out: scrape /metrics over HTTP like Prometheus does.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>

#include "app/server.h"
#include "metrics_scrape.h"
#include "scan/client/scan_client.h"

namespace scan {
namespace {

using ::testing::HasSubstr;
using testing::http_get;
using testing::sample;

class MetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server::ServerConfig config;
    config.drain_delay_seconds = 0;  // no drain to wait for in-process
    config.listen = "127.0.0.1:0";
    config.metrics_listen = "127.0.0.1:0";
    config.worker_threads = 2;
    config.cpu_backend = cpu_backend_;
    config.warm_start = false;
    config.gpu = "off";  // exact per-backend counts: no GPU backend to share AUTO traffic with
    server_ = std::make_unique<server::ScanServer>(config, server::compose_backends(config));
    ASSERT_TRUE(server_->start());
    ASSERT_GT(server_->metrics_port(), 0);
    client_ = std::make_unique<client::Client>("127.0.0.1:" + std::to_string(server_->port()));
  }

  std::string scrape() {
    const std::string reply = http_get(server_->metrics_port(), "/metrics");
    EXPECT_THAT(reply, HasSubstr("200 OK"));
    return reply;
  }

  grpc::Status scan(const client::HostTensor& gamma, int dim,
                    v1::BackendPreference backend = v1::BACKEND_PREFERENCE_AUTO) {
    client::ScanOptions options;
    options.dim = dim;
    options.backend = backend;
    client::ScanResult result;
    return client_->Scan(gamma, options, &result);
  }

  // Pinned so that exact per-backend counts are predictable; the calibrated case has its own test.
  std::string cpu_backend_ = "cpu-torch";
  std::unique_ptr<server::ScanServer> server_;
  std::unique_ptr<client::Client> client_;
};

class CalibratedMetricsTest : public MetricsTest {
 protected:
  void SetUp() override {
    cpu_backend_ = "auto";
    MetricsTest::SetUp();
  }
};

TEST_F(CalibratedMetricsTest, PublishesTheCostModelOfEveryCpuBackend) {
  const std::string text = scrape();
  for (const char* backend : {"cpu-native", "cpu-torch"}) {
    const std::string labels = std::string(R"({backend=")") + backend + R"("})";
    EXPECT_GT(sample(text, "scan_router_cost_bytes_per_second" + labels), 0) << backend;
    EXPECT_GE(sample(text, "scan_router_cost_fixed_seconds" + labels), 0) << backend;
    EXPECT_EQ(sample(text, "scan_backend_up" + labels), 1) << backend;
  }
}

TEST_F(MetricsTest, CountsEveryOutcomeWithExactLabelsAndBytes) {
  std::mt19937_64 seeds(std::random_device{}());
  const auto f32 = client::random_gamma(kernels::DType::kFloat32, {3, 100, 8}, 0.5, 1, seeds());
  const auto bf16 = client::random_gamma(kernels::DType::kBFloat16, {2, 64}, 0.5, 1, seeds());
  ASSERT_TRUE(scan(f32, 1).ok());
  ASSERT_TRUE(scan(f32, 1, v1::BACKEND_PREFERENCE_CPU).ok());
  ASSERT_TRUE(scan(bf16, -1).ok());
  EXPECT_EQ(scan(f32, 7).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(scan(f32, 0, v1::BACKEND_PREFERENCE_GPU).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  const std::string text = scrape();
  EXPECT_EQ(sample(text, R"(scan_requests_total{backend="cpu-torch",code="OK"})"), 3);
  EXPECT_EQ(sample(text, R"(scan_requests_total{backend="none",code="INVALID_ARGUMENT"})"), 1);
  EXPECT_EQ(sample(text, R"(scan_requests_total{backend="none",code="FAILED_PRECONDITION"})"), 1);
  EXPECT_EQ(sample(text, R"(scan_requests_total{backend="cpu-torch",code="INTERNAL"})"), 0);
  EXPECT_EQ(sample(text, R"(scan_routing_decisions_total{backend="cpu-torch",reason="auto"})"), 2);
  EXPECT_EQ(
      sample(text, R"(scan_routing_decisions_total{backend="cpu-torch",reason="preference_cpu"})"),
      1);
  EXPECT_EQ(
      sample(text, R"(scan_request_duration_seconds_count{backend="cpu-torch",dtype="float32",rpc="Scan",transport="grpc"})"),
      2);
  EXPECT_EQ(
      sample(text, R"(scan_request_duration_seconds_count{backend="cpu-torch",dtype="bfloat16",rpc="Scan",transport="grpc"})"),
      1);
  EXPECT_EQ(
      sample(text, R"(scan_request_duration_seconds_count{backend="cpu-torch",dtype="float16",rpc="Scan",transport="grpc"})"),
      0);
  EXPECT_EQ(sample(text, R"(scan_compute_seconds_count{backend="cpu-torch"})"), 3);
  EXPECT_EQ(sample(text, R"(scan_queue_wait_seconds_count{backend="cpu-torch"})"), 3);
  const double served_bytes = 2 * f32.data.size() + bf16.data.size();
  EXPECT_EQ(sample(text, R"(scan_request_bytes_total{backend="cpu-torch"})"), served_bytes);
  EXPECT_EQ(sample(text, R"(scan_response_bytes_total{backend="cpu-torch"})"), served_bytes);
  EXPECT_EQ(sample(text, R"(scan_request_bytes_total{backend="none"})"), 2.0 * f32.data.size());
  EXPECT_EQ(sample(text, R"(scan_response_bytes_total{backend="none"})"), 0);
  EXPECT_EQ(sample(text, "scan_inflight_requests"), 0);
  EXPECT_EQ(sample(text, R"(scan_backend_up{backend="cpu-torch"})"), 1);
  EXPECT_THAT(text, HasSubstr("scan_build_info{"));
}

TEST_F(MetricsTest, LatencyLandsInTheRightCumulativeBuckets) {
  const auto tiny = client::random_gamma(kernels::DType::kFloat32, {4}, 0.5, 1, 1);
  ASSERT_TRUE(scan(tiny, 0).ok());
  const std::string text = scrape();
  const std::string labels = R"(backend="cpu-torch",dtype="float32",rpc="Scan",transport="grpc")";
  // One observation: its value is the _sum, so every bucket below it holds 0 and every bucket at
  // or above it holds 1.
  const double observed = sample(text, "scan_request_duration_seconds_sum{" + labels + "}");
  ASSERT_GT(observed, 0);
  const std::regex bucket_line(
      R"re(scan_request_duration_seconds_bucket\{backend="cpu-torch",dtype="float32",rpc="Scan",transport="grpc",le="([^"]+)"\} (\S+))re");
  std::vector<double> bounds;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), bucket_line);
       it != std::sregex_iterator(); ++it) {
    const std::string le = (*it)[1];
    const double count = std::stod((*it)[2]);
    if (le == "+Inf") {
      EXPECT_EQ(count, 1);
      continue;
    }
    const double bound = std::stod(le);
    bounds.push_back(bound);
    EXPECT_EQ(count, observed <= bound ? 1 : 0) << "le=" << le << " observed " << observed;
  }
  EXPECT_EQ(bounds, server::ServiceMetrics::latency_buckets());
  EXPECT_EQ(bounds.front(), 10e-6);
  EXPECT_EQ(bounds.back(), 30.0);
}

}  // namespace
}  // namespace scan

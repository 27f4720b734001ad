// Which series exist before any request: every backend's series up front, GPU-only series for GPU
// backends only, so dashboards see zeros rather than gaps and label sets stay bounded.
#include "metrics/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include <sstream>

namespace scan::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string exposition(const ServiceMetrics& metrics) {
  std::ostringstream text;
  prometheus::TextSerializer().Serialize(text, metrics.registry()->Collect());
  return text.str();
}

TEST(ServiceMetrics, CpuOnlyServerHasNoGpuSeries) {
  const ServiceMetrics metrics({{"cpu-torch", DeviceKind::kCpu}}, "1.2.3");
  const std::string text = exposition(metrics);
  EXPECT_THAT(text, HasSubstr("scan_gpu_devices 0"));
  EXPECT_THAT(text, HasSubstr(R"(scan_build_info{grpc_version=)"));
  EXPECT_THAT(text, HasSubstr(R"(version="1.2.3"} 1)"));
  EXPECT_THAT(text, HasSubstr(R"(scan_requests_total{backend="cpu-torch",code="OK"} 0)"));
  EXPECT_THAT(text, HasSubstr(R"(scan_requests_total{backend="none",code="INVALID_ARGUMENT"} 0)"));
  EXPECT_THAT(text, Not(HasSubstr("scan_transfer_duration_seconds_bucket")));
  EXPECT_THAT(text, Not(HasSubstr("scan_backend_fallbacks_total{")));
}

TEST(ServiceMetrics, GpuBackendGetsTransferMemoryAndFallbackSeries) {
  const ServiceMetrics metrics({{"cpu-native", DeviceKind::kCpu}, {"cuda:0", DeviceKind::kGpu}},
                               "1.2.3");
  const std::string text = exposition(metrics);
  EXPECT_THAT(text, HasSubstr("scan_gpu_devices 1"));
  EXPECT_THAT(text, HasSubstr(R"(scan_backend_fallbacks_total{from="cuda:0",to="cpu-native"} 0)"));
  EXPECT_THAT(
      text,
      HasSubstr(
          R"(scan_transfer_duration_seconds_count{backend="cuda:0",direction="host_to_device"} 0)"));
  EXPECT_THAT(text, HasSubstr(R"(scan_gpu_memory_used_bytes{backend="cuda:0"} 0)"));
  EXPECT_THAT(text, Not(HasSubstr(R"(scan_transfer_duration_seconds_count{backend="cpu-native")")));

  metrics.backend(1).fallback_to_cpu->Increment();
  metrics.backend(1).host_to_device->Observe(0.003);
  const std::string after = exposition(metrics);
  EXPECT_THAT(after, HasSubstr(R"(scan_backend_fallbacks_total{from="cuda:0",to="cpu-native"} 1)"));
  EXPECT_THAT(
      after,
      HasSubstr(
          R"(scan_transfer_duration_seconds_bucket{backend="cuda:0",direction="host_to_device",le="0.0025"} 0)"));
  EXPECT_THAT(
      after,
      HasSubstr(
          R"(scan_transfer_duration_seconds_bucket{backend="cuda:0",direction="host_to_device",le="0.005"} 1)"));
}

TEST(ServiceMetrics, RecordCountsRejectionsUnderBackendNone) {
  const ServiceMetrics metrics({{"cpu-torch", DeviceKind::kCpu}}, "1.2.3");
  RequestRecord rejected;
  rejected.code = grpc::StatusCode::INVALID_ARGUMENT;
  rejected.request_bytes = 12;
  metrics.record(rejected);
  RequestRecord served;
  served.backend = &metrics.backend(0);
  served.dtype = kernels::DType::kBFloat16;
  served.seconds = 0.2;
  served.queue_seconds = 0;
  served.compute_seconds = 0.15;
  served.request_bytes = served.response_bytes = 40;
  metrics.record(served);
  const std::string text = exposition(metrics);
  EXPECT_THAT(text, HasSubstr(R"(scan_requests_total{backend="none",code="INVALID_ARGUMENT"} 1)"));
  EXPECT_THAT(text, HasSubstr(R"(scan_request_bytes_total{backend="none"} 12)"));
  EXPECT_THAT(text, HasSubstr(R"(scan_requests_total{backend="cpu-torch",code="OK"} 1)"));
  EXPECT_THAT(
      text,
      HasSubstr(
          R"(scan_request_duration_seconds_bucket{backend="cpu-torch",dtype="bfloat16",rpc="Scan",transport="grpc",le="0.1"} 0)"));
  EXPECT_THAT(
      text,
      HasSubstr(
          R"(scan_request_duration_seconds_bucket{backend="cpu-torch",dtype="bfloat16",rpc="Scan",transport="grpc",le="0.25"} 1)"));
  EXPECT_THAT(text, HasSubstr(R"(scan_compute_seconds_sum{backend="cpu-torch"} 0.15)"));
}

}  // namespace
}  // namespace scan::server

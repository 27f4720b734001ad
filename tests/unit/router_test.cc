#include "router.h"

#include <gtest/gtest.h>

namespace scan::server {
namespace {

class FakeBackend final : public ScanBackend {
 public:
  FakeBackend(std::string name, DeviceKind kind) : name_(std::move(name)), kind_(kind) {}
  const std::string& name() const override { return name_; }
  DeviceKind device_kind() const override { return kind_; }
  kernels::KernelStatus run(const ScanJob&) override { return kernels::KernelStatus::Ok(); }

 private:
  std::string name_;
  DeviceKind kind_;
};

ValidatedScan scan_preferring(v1::BackendPreference preference) {
  ValidatedScan scan;
  scan.preference = preference;
  return scan;
}

std::string routed_name(Router& router, v1::BackendPreference preference) {
  RegisteredBackend* chosen = nullptr;
  const grpc::Status status = router.route(scan_preferring(preference), &chosen);
  return status.ok() ? chosen->backend->name() : "error:" + std::to_string(status.error_code());
}

TEST(Router, CpuOnlyServerServesAutoAndCpuAndRefusesGpu) {
  Router router;
  router.add_backend(std::make_unique<FakeBackend>("cpu-fake", DeviceKind::kCpu), 1);
  EXPECT_EQ(routed_name(router, v1::BACKEND_PREFERENCE_AUTO), "cpu-fake");
  EXPECT_EQ(routed_name(router, v1::BACKEND_PREFERENCE_CPU), "cpu-fake");
  EXPECT_EQ(routed_name(router, v1::BACKEND_PREFERENCE_GPU),
            "error:" + std::to_string(grpc::StatusCode::FAILED_PRECONDITION));
}

TEST(Router, ExplicitPreferencesAreHonouredWhenBothExist) {
  Router router;
  router.add_backend(std::make_unique<FakeBackend>("cpu-fake", DeviceKind::kCpu), 1);
  router.add_backend(std::make_unique<FakeBackend>("gpu-fake", DeviceKind::kGpu), 1);
  EXPECT_EQ(routed_name(router, v1::BACKEND_PREFERENCE_CPU), "cpu-fake");
  EXPECT_EQ(routed_name(router, v1::BACKEND_PREFERENCE_GPU), "gpu-fake");
}

TEST(Router, EmptyRouterIsUnavailable) {
  Router router;
  EXPECT_EQ(routed_name(router, v1::BACKEND_PREFERENCE_CPU),
            "error:" + std::to_string(grpc::StatusCode::UNAVAILABLE));
}

}  // namespace
}  // namespace scan::server

namespace scan::server {
namespace {

ValidatedScan scan_of_bytes(std::size_t bytes, v1::BackendPreference preference) {
  ValidatedScan scan;
  scan.bytes = bytes;
  scan.preference = preference;
  return scan;
}

std::string routed_for_bytes(Router& router, std::size_t bytes,
                             v1::BackendPreference preference = v1::BACKEND_PREFERENCE_AUTO) {
  RegisteredBackend* chosen = nullptr;
  EXPECT_TRUE(router.route(scan_of_bytes(bytes, preference), &chosen).ok());
  return chosen == nullptr ? "" : chosen->backend->name();
}

TEST(Router, PicksTheLowestPredictedTimeForEachSize) {
  Router router;
  router.add_backend(std::make_unique<FakeBackend>("cpu-high-fixed", DeviceKind::kCpu), 1);
  router.add_backend(std::make_unique<FakeBackend>("cpu-slow-stream", DeviceKind::kCpu), 1);
  // 100 us + 10 GB/s against 1 us + 1 GB/s: they cross at 11 kB.
  router.set_cost_model(0, {100e-6, 10e9});
  router.set_cost_model(1, {1e-6, 1e9});
  EXPECT_EQ(routed_for_bytes(router, 1'000), "cpu-slow-stream");
  EXPECT_EQ(routed_for_bytes(router, 1'000'000), "cpu-high-fixed");
  EXPECT_EQ(routed_for_bytes(router, 1'000, v1::BACKEND_PREFERENCE_CPU), "cpu-slow-stream");
}

TEST(Router, CalibratedBackendsRankBeforeUnknownOnes) {
  Router router;
  router.add_backend(std::make_unique<FakeBackend>("cpu-unknown", DeviceKind::kCpu), 1);
  router.add_backend(std::make_unique<FakeBackend>("cpu-known", DeviceKind::kCpu), 1);
  EXPECT_EQ(routed_for_bytes(router, 64), "cpu-unknown");  // nothing known: registration order
  router.set_cost_model(1, {1e-3, 1e6});
  EXPECT_EQ(routed_for_bytes(router, 64), "cpu-known");
}

TEST(CostModel, FitRecoversALineAndStaysPhysical) {
  const CostModel line = fit_cost_model(
      {{1e3, 20e-6 + 1e3 / 2e9}, {1e6, 20e-6 + 1e6 / 2e9}, {4e6, 20e-6 + 4e6 / 2e9}});
  EXPECT_NEAR(line.fixed_seconds, 20e-6, 1e-9);
  EXPECT_NEAR(line.bytes_per_second, 2e9, 1e3);
  // Noise tilting the line downwards must not produce a negative throughput.
  const CostModel tilted = fit_cost_model({{1e3, 5e-3}, {1e6, 1e-3}});
  EXPECT_GT(tilted.bytes_per_second, 0);
  EXPECT_GE(tilted.fixed_seconds, 0);
  EXPECT_FALSE(fit_cost_model({}).known());
}

}  // namespace
}  // namespace scan::server

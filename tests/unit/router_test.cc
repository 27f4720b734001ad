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

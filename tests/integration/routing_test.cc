// Routing through a real server with a fake GPU backend (no GPU needed): a GPU that fails is
// retried on the CPU with a correct answer and a counted fallback, and GetServerInfo shows what
// the router works with.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>

#include "app/server.h"
#include "backends/cpu_native_backend.h"
#include "in_process_server.h"
#include "scan/client/scan_client.h"
#include "scan/kernels/thread_pool.h"

namespace scan {
namespace {

using kernels::DType;

// Scribbles over the output, then reports a device error: what a GPU that died mid-request does.
class FailingGpu final : public server::ScanBackend {
 public:
  const std::string& name() const override { return name_; }
  server::DeviceKind device_kind() const override { return server::DeviceKind::kGpu; }
  kernels::KernelStatus run(const server::ScanJob& job) override {
    ++runs;
    std::memset(job.output, 0x7f,
                static_cast<std::size_t>(job.view.numel()) * kernels::element_size(job.dtype));
    return {kernels::KernelStatus::Code::kDeviceError, "fake-gpu: device lost (test)"};
  }
  bool available() const override { return up; }

  std::atomic<int> runs{0};
  std::atomic<bool> up{true};

 private:
  std::string name_ = "fake-gpu";
};

class RoutingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto router = std::make_unique<server::Router>();
    auto pool = std::make_shared<kernels::ThreadPool>(1);
    router->add_backend(server::make_cpu_native_backend(*pool, pool->max_parallelism()), 2);
    router->keep_alive(pool);
    auto gpu = std::make_unique<FailingGpu>();
    gpu_ = gpu.get();
    router->add_backend(std::move(gpu), 1);
    router->set_cost_model(0, {5e-6, 1e9});
    router->set_cost_model(1, {50e-6, 50e9}, {}, server::CostSource::kConfigured);
    kernels::GpuInventory inventory;
    inventory.status = "1 fake GPU";
    inventory.devices.push_back({0, "Fake GPU", 1 << 30, 9, 0, 132, true, ""});

    running_ = std::make_unique<testing::InProcessServer>(testing::loopback_config(),
                                                          std::move(router), inventory);
    ASSERT_TRUE(running_->started());
    client_ = &running_->client();
  }

  void TearDown() override { running_.reset(); }

  FailingGpu* gpu_ = nullptr;
  std::unique_ptr<testing::InProcessServer> running_;
  client::Client* client_ = nullptr;
};

TEST_F(RoutingTest, GpuFailureIsRetriedOnTheCpuWithACorrectAnswer) {
  for (const auto preference : {v1::BACKEND_PREFERENCE_GPU, v1::BACKEND_PREFERENCE_AUTO}) {
    for (const DType dtype : {DType::kFloat32, DType::kBFloat16}) {
      // 1 MiB and up: the models send AUTO to the (fake) GPU.
      const auto gamma = client::random_gamma(dtype, {2, 8, 512, 64}, 0.5, 1.0, 42);
      client::ScanOptions options;
      options.dim = 2;
      options.backend = preference;
      options.timeout = std::chrono::seconds(30);
      client::ScanResult result;
      const grpc::Status status = client_->Scan(gamma, options, &result);
      ASSERT_TRUE(status.ok()) << status.error_message();
      EXPECT_EQ(result.backend, "cpu-native");
      const kernels::Comparison comparison = client::check_cumprod(gamma, result.result, 2);
      EXPECT_TRUE(comparison.ok()) << comparison.mismatches << " mismatches";
    }
  }
  EXPECT_EQ(gpu_->runs.load(), 4);
  EXPECT_EQ(running_->server().metrics().backend(1).fallback_to_cpu->Value(), 4);
}

TEST_F(RoutingTest, ServerInfoShowsBackendsModelsAndGpus) {
  v1::GetServerInfoResponse info;
  ASSERT_TRUE(client_->GetServerInfo(&info).ok());
  EXPECT_EQ(info.version(), SCAN_VERSION);
  ASSERT_EQ(info.backends_size(), 2);
  EXPECT_EQ(info.backends(0).name(), "cpu-native");
  EXPECT_EQ(info.backends(0).kind(), v1::DEVICE_KIND_CPU);
  EXPECT_EQ(info.backends(0).cost_model().source(), "calibrated");
  EXPECT_EQ(info.backends(0).concurrency(), 2);
  EXPECT_EQ(info.backends(1).name(), "fake-gpu");
  EXPECT_EQ(info.backends(1).kind(), v1::DEVICE_KIND_GPU);
  EXPECT_TRUE(info.backends(1).available());
  EXPECT_DOUBLE_EQ(info.backends(1).cost_model().bytes_per_second(), 50e9);
  EXPECT_EQ(info.backends(1).cost_model().source(), "configured");
  ASSERT_EQ(info.gpus_size(), 1);
  EXPECT_EQ(info.gpus(0).name(), "Fake GPU");
  EXPECT_EQ(info.gpu_status(), "1 fake GPU");

  // An unhealthy GPU shows as such and gets no AUTO traffic; a GPU preference is refused.
  gpu_->up = false;
  ASSERT_TRUE(client_->GetServerInfo(&info).ok());
  EXPECT_FALSE(info.backends(1).available());
  const auto gamma = client::random_gamma(DType::kFloat32, {2, 8, 512, 64}, 0.5, 1.0, 7);
  client::ScanOptions options;
  options.dim = 2;
  client::ScanResult result;
  ASSERT_TRUE(client_->Scan(gamma, options, &result).ok());
  EXPECT_EQ(result.backend, "cpu-native");
  options.backend = v1::BACKEND_PREFERENCE_GPU;
  EXPECT_EQ(client_->Scan(gamma, options, &result).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(gpu_->runs.load(), 0);
}

TEST(DefaultServerInfo, SaysWhetherGpusServe) {
  server::ServerConfig config = testing::loopback_config();
  config.cpu_backend = "cpu-native";
  config.gpu = "auto";  // the point here: discovery, with or without GPUs
  testing::InProcessServer running(config);
  ASSERT_TRUE(running.started());
  v1::GetServerInfoResponse info;
  ASSERT_TRUE(running.client().GetServerInfo(&info).ok());
  EXPECT_FALSE(info.gpu_status().empty());
  int gpu_backends = 0;
  for (const auto& backend : info.backends()) gpu_backends += backend.kind() == v1::DEVICE_KIND_GPU;
  int usable = 0;
  for (const auto& gpu : info.gpus()) usable += gpu.usable();
  EXPECT_EQ(gpu_backends, usable);  // one backend per usable GPU; none on machines without
  EXPECT_EQ(running.server().metrics().backend(0).up->Value(), 1);
}

}  // namespace
}  // namespace scan

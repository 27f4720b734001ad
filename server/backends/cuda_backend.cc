#include "backends/cuda_backend.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "backends/device_health.h"

namespace scan::server {
namespace {

using kernels::KernelStatus;

class CudaBackend final : public ScanBackend {
 public:
  CudaBackend(int ordinal, std::unique_ptr<kernels::CudaPipeline> pipeline,
              const CudaBackendOptions& options)
      : name_("cuda:" + std::to_string(ordinal)),
        options_(options),
        pipeline_(std::move(pipeline)),
        health_(options.max_consecutive_errors,
                std::chrono::duration_cast<DeviceHealth::Clock::duration>(
                    std::chrono::duration<double>(options.probe_interval_seconds))),
        injected_failures_(options.injected_failures),
        prober_([this] { probe_loop(); }) {
    spdlog::info("{}: {} lanes x {} slots of {} MiB: {} MiB device memory, {} MiB pinned", name_,
                 pipeline_->lanes(), pipeline_->slots_per_lane(),
                 options.pipeline.chunk_bytes >> 20, pipeline_->device_bytes() >> 20,
                 pipeline_->pinned_bytes() >> 20);
  }

  ~CudaBackend() override {
    {
      std::lock_guard<std::mutex> lock(prober_mutex_);
      stopping_ = true;
    }
    prober_wake_.notify_all();
    prober_.join();
  }

  const std::string& name() const override { return name_; }
  DeviceKind device_kind() const override { return DeviceKind::kGpu; }
  bool available() const override { return health_.healthy(); }
  std::int64_t device_memory_bytes() const override { return pipeline_->device_bytes(); }
  void on_availability_change(std::function<void(bool)> callback) override {
    std::lock_guard<std::mutex> lock(callback_mutex_);
    on_change_ = std::move(callback);
  }

  KernelStatus run(const ScanJob& job) override {
    KernelStatus status;
    if (consume_injected_failure()) {
      status = {KernelStatus::Code::kDeviceError, name_ + ": injected failure (test)"};
    } else {
      kernels::CudaTransferTimes times;
      status = job.device_memory
                   ? pipeline_->run_on_device({job.dtype, job.view, job.input, job.output})
                   : pipeline_->run({job.dtype, job.view, job.input, job.output}, &times);
      if (status.ok() && !job.device_memory && job.stats != nullptr && job.view.numel() > 0) {
        job.stats->host_to_device_seconds = times.host_to_device_seconds;
        job.stats->device_to_host_seconds = times.device_to_host_seconds;
      }
    }
    if (status.ok()) {
      health_.record_success();
    } else if (status.code() == KernelStatus::Code::kDeviceError &&
               health_.record_error(DeviceHealth::Clock::now())) {
      spdlog::error(
          "{}: marked unhealthy after {} consecutive errors (last: {}); probing every {} s", name_,
          options_.max_consecutive_errors, status.message(), options_.probe_interval_seconds);
      notify(false);
    }
    return status;
  }

 private:
  bool consume_injected_failure() {
    int injected = injected_failures_.load();
    while (injected > 0 && !injected_failures_.compare_exchange_weak(injected, injected - 1)) {
    }
    return injected > 0;
  }

  void notify(bool up) {
    std::lock_guard<std::mutex> lock(callback_mutex_);
    if (on_change_) on_change_(up);
  }

  void probe_loop() {
    std::unique_lock<std::mutex> lock(prober_mutex_);
    const auto tick = std::chrono::duration_cast<DeviceHealth::Clock::duration>(
        std::chrono::duration<double>(std::max(0.01, options_.probe_interval_seconds / 4)));
    while (!prober_wake_.wait_for(lock, tick, [this] { return stopping_; })) {
      if (!health_.probe_due(DeviceHealth::Clock::now())) continue;
      lock.unlock();
      const KernelStatus status = pipeline_->self_test();
      if (health_.record_probe(status.ok(), DeviceHealth::Clock::now())) {
        spdlog::info("{}: probe passed, serving again", name_);
        notify(true);
      } else if (!status.ok()) {
        spdlog::warn("{}: probe failed, still unhealthy: {}", name_, status.message());
      }
      lock.lock();
    }
  }

  const std::string name_;
  const CudaBackendOptions options_;
  const std::unique_ptr<kernels::CudaPipeline> pipeline_;
  DeviceHealth health_;
  std::atomic<int> injected_failures_;

  std::mutex callback_mutex_;
  std::function<void(bool)> on_change_;

  std::mutex prober_mutex_;
  std::condition_variable prober_wake_;
  bool stopping_ = false;
  std::thread prober_;  // last: it starts in the constructor and reads the members above
};

void log_pipeline(kernels::PipelineLogLevel level, const std::string& message) {
  spdlog::log(
      level == kernels::PipelineLogLevel::kInfo ? spdlog::level::info : spdlog::level::debug,
      message);
}

}  // namespace

std::shared_ptr<kernels::CudaHostRegistry> process_cuda_host_registry() {
  static const auto registry = std::make_shared<kernels::CudaHostRegistry>(&log_pipeline);
  return registry;
}

std::unique_ptr<ScanBackend> make_cuda_backend(int ordinal, const CudaBackendOptions& options,
                                               std::string* error) {
  KernelStatus status;
  auto pipeline = kernels::CudaPipeline::create(ordinal, options.pipeline, &status);
  if (pipeline == nullptr) {
    *error = status.message();
    return nullptr;
  }
  return std::make_unique<CudaBackend>(ordinal, std::move(pipeline), options);
}

}  // namespace scan::server

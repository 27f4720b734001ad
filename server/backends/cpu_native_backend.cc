#include "backends/cpu_native_backend.h"

#include <atomic>
#include <cstdint>
#include <ctime>

#include "scan/kernels/cpu_cumprod.h"

namespace scan::server {
namespace {

std::int64_t thread_cpu_nanoseconds() {
  timespec used{};
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &used) != 0) return 0;
  return std::int64_t{used.tv_sec} * 1'000'000'000 + used.tv_nsec;
}

class CpuNativeBackend final : public ScanBackend {
 public:
  CpuNativeBackend(kernels::ThreadPool& pool, int max_parallelism, bool flush_subnormals)
      : pool_(pool), max_parallelism_(max_parallelism), flush_subnormals_(flush_subnormals) {}

  const std::string& name() const override { return name_; }
  DeviceKind device_kind() const override { return DeviceKind::kCpu; }
  bool flushes_subnormals() const override { return flush_subnormals_; }

  kernels::KernelStatus run(const ScanJob& job) override {
    kernels::CpuScanOptions options;
    options.pool = &pool_;
    options.max_parallelism = max_parallelism_;
    options.flush_subnormals = flush_subnormals_;
    // The calling thread computes too (the pool's workers only help it).
    const std::int64_t started = thread_cpu_nanoseconds();
    kernels::KernelStatus status =
        kernels::cpu_cumprod(job.input, job.output, job.view, job.dtype, options);
    callers_cpu_nanoseconds_.fetch_add(thread_cpu_nanoseconds() - started,
                                       std::memory_order_relaxed);
    return status;
  }

  double scan_cpu_seconds() const override {
    return pool_.workers_cpu_seconds() +
           static_cast<double>(callers_cpu_nanoseconds_.load(std::memory_order_relaxed)) * 1e-9;
  }

 private:
  const std::string name_ = "cpu-native";
  kernels::ThreadPool& pool_;
  const int max_parallelism_;
  const bool flush_subnormals_;
  std::atomic<std::int64_t> callers_cpu_nanoseconds_{0};
};

}  // namespace

std::unique_ptr<ScanBackend> make_cpu_native_backend(kernels::ThreadPool& pool, int max_parallelism,
                                                     bool flush_subnormals) {
  return std::make_unique<CpuNativeBackend>(pool, max_parallelism, flush_subnormals);
}

}  // namespace scan::server

#include "backends/cpu_native_backend.h"

#include "scan/kernels/cpu_cumprod.h"

namespace scan::server {
namespace {

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
    return kernels::cpu_cumprod(job.input, job.output, job.view, job.dtype, options);
  }

 private:
  const std::string name_ = "cpu-native";
  kernels::ThreadPool& pool_;
  const int max_parallelism_;
  const bool flush_subnormals_;
};

}  // namespace

std::unique_ptr<ScanBackend> make_cpu_native_backend(kernels::ThreadPool& pool, int max_parallelism,
                                                     bool flush_subnormals) {
  return std::make_unique<CpuNativeBackend>(pool, max_parallelism, flush_subnormals);
}

}  // namespace scan::server

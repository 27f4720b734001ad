// The only translation unit that includes LibTorch headers (they dominate build time).
#include "backends/cpu_torch_backend.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "scan/kernels/float_env.h"

namespace scan::server {
namespace {

at::ScalarType to_scalar_type(kernels::DType dtype) {
  switch (dtype) {
    case kernels::DType::kFloat32:
      return at::kFloat;
    case kernels::DType::kFloat64:
      return at::kDouble;
    case kernels::DType::kFloat16:
      return at::kHalf;
    case kernels::DType::kBFloat16:
      return at::kBFloat16;
  }
  return at::kFloat;
}

bool aligned_for(const void* address, std::size_t alignment) {
  return reinterpret_cast<std::uintptr_t>(address) % alignment == 0;
}

class CpuTorchBackend final : public ScanBackend {
 public:
  explicit CpuTorchBackend(bool flush_subnormals) : flush_subnormals_(flush_subnormals) {
    // Requests already run concurrently on the service's threads; intra-op threads on top of
    // that would oversubscribe the cores.
    at::set_num_threads(1);
  }

  const std::string& name() const override { return name_; }
  DeviceKind device_kind() const override { return DeviceKind::kCpu; }
  bool flushes_subnormals() const override { return flush_subnormals_; }

  kernels::KernelStatus run(const ScanJob& job) override {
    const std::size_t element_bytes = kernels::element_size(job.dtype);
    const std::size_t bytes = static_cast<std::size_t>(job.view.numel()) * element_bytes;
    if (bytes == 0) return kernels::KernelStatus::Ok();
    const kernels::ScopedFlushSubnormals flush(flush_subnormals_);
    try {
      const auto options = at::TensorOptions().dtype(to_scalar_type(job.dtype));
      const std::vector<int64_t> sizes{job.view.outer, job.view.length, job.view.inner};

      // Wire bytes carry no alignment promise; LibTorch's vectorised loops assume element
      // alignment, so only misaligned buffers pay for a copy.
      std::vector<std::max_align_t> staged_input;
      const void* input = job.input;
      if (!aligned_for(input, element_bytes)) {
        staged_input.resize((bytes + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t));
        std::memcpy(staged_input.data(), input, bytes);
        input = staged_input.data();
      }
      const at::Tensor in = at::from_blob(const_cast<void*>(input), sizes, options);

      if (element_bytes == 2) {
        // Every backend accumulates in float64 and rounds through float32 (LibTorch's own CPU
        // cumprod does so for float32; for the 16-bit types it accumulates in float32, and 1.13
        // has none for Half), so that a request's answer does not depend on where it ran.
        const at::Tensor out =
            at::cumprod(in.to(at::kDouble), /*dim=*/1).to(at::kFloat).to(in.scalar_type());
        std::memcpy(job.output, out.data_ptr(), bytes);
      } else if (aligned_for(job.output, element_bytes)) {
        at::Tensor out = at::from_blob(job.output, sizes, options);
        at::cumprod_out(out, in, /*dim=*/1);
      } else {
        const at::Tensor out = at::cumprod(in, /*dim=*/1);
        std::memcpy(job.output, out.data_ptr(), bytes);
      }
      return kernels::KernelStatus::Ok();
    } catch (const c10::Error& error) {
      return {kernels::KernelStatus::Code::kDeviceError,
              std::string("torch::cumprod failed: ") + error.what_without_backtrace()};
    } catch (const std::exception& error) {
      return {kernels::KernelStatus::Code::kDeviceError,
              std::string("torch::cumprod failed: ") + error.what()};
    }
  }

 private:
  const std::string name_ = "cpu-torch";
  const bool flush_subnormals_;
};

}  // namespace

std::unique_ptr<ScanBackend> make_cpu_torch_backend(bool flush_subnormals) {
  return std::make_unique<CpuTorchBackend>(flush_subnormals);
}

}  // namespace scan::server

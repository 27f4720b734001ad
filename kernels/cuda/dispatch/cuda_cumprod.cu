// Public entry point: argument checks, dtype dispatch, and the workspace pool.
#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <string>

#include "dispatch/scan_traits.cuh"
#include "dispatch/workspace.cuh"
#include "scan/kernels/cuda_cumprod.h"

namespace scan::kernels {
namespace cuda_detail {

// Defined in dispatch.cuh and instantiated, one dtype each, in cumprod_<dtype>.cu.
template <typename Traits>
KernelStatus dispatch_cumprod(const void* in, void* out, ScanShape shape, cudaStream_t stream);

namespace {

// One pool per device, created on first use and kept for the life of the process: it keeps the
// memory it has handed out (release threshold: never), so after the first calls a workspace
// allocation is a host-side bookkeeping step with no device synchronisation. A pool of our own
// leaves the device's default pool, and whoever else tunes it, alone.
KernelStatus pool_for_current_device(cudaMemPool_t* pool) {
  static std::mutex mutex;
  static std::map<int, cudaMemPool_t> pools;

  int device = 0;
  SCAN_CUDA_TRY("cuda_cumprod: cudaGetDevice", cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mutex);
  auto found = pools.find(device);
  if (found != pools.end()) {
    *pool = found->second;
    return KernelStatus::Ok();
  }
  int supported = 0;
  SCAN_CUDA_TRY("cuda_cumprod: cudaDeviceGetAttribute(MemoryPoolsSupported)",
                cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, device));
  if (!supported) {
    return {KernelStatus::Code::kUnsupported,
            "cuda_cumprod: the device has no stream-ordered memory pools"};
  }
  cudaMemPoolProps props = {};
  props.allocType = cudaMemAllocationTypePinned;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = device;
  cudaMemPool_t created = nullptr;
  SCAN_CUDA_TRY("cuda_cumprod: cudaMemPoolCreate", cudaMemPoolCreate(&created, &props));
  std::uint64_t keep_everything = std::numeric_limits<std::uint64_t>::max();
  const cudaError_t error =
      cudaMemPoolSetAttribute(created, cudaMemPoolAttrReleaseThreshold, &keep_everything);
  if (error != cudaSuccess) {
    cudaMemPoolDestroy(created);
    return cuda_error("cuda_cumprod: cudaMemPoolSetAttribute(ReleaseThreshold)", error);
  }
  pools.emplace(device, created);
  *pool = created;
  return KernelStatus::Ok();
}

unsigned long long next_tag() {
  // 62 bits, never 0 (zeroed flags must never match). Wrapping needs 2^62 launches.
  static std::atomic<unsigned long long> counter{0};
  constexpr unsigned long long kMask = (1ULL << 62) - 1;
  unsigned long long tag;
  do {
    tag = (counter.fetch_add(1, std::memory_order_relaxed) + 1) & kMask;
  } while (tag == 0);
  return tag;
}

}  // namespace

KernelStatus acquire_workspace(std::size_t bytes, std::size_t flag_bytes, cudaStream_t stream,
                               Workspace* workspace) {
  workspace->tag = next_tag();
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  SCAN_CUDA_TRY("cuda_cumprod: cudaStreamIsCapturing", cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) {
    // Under capture: creating a pool is not allowed, and a graph replays one tag, so stale flags
    // of the previous replay would read as current. A graph allocation node plus a memset node.
    SCAN_CUDA_TRY("cuda_cumprod: cudaMallocAsync (capturing)",
                  cudaMallocAsync(&workspace->data, bytes, stream));
    const cudaError_t error = cudaMemsetAsync(workspace->data, 0, flag_bytes, stream);
    if (error != cudaSuccess) {
      cudaFreeAsync(workspace->data, stream);
      return cuda_error("cuda_cumprod: cudaMemsetAsync(tile flags)", error);
    }
    return KernelStatus::Ok();
  }
  cudaMemPool_t pool = nullptr;
  KernelStatus status = pool_for_current_device(&pool);
  if (!status.ok()) return status;
  SCAN_CUDA_TRY("cuda_cumprod: cudaMallocFromPoolAsync",
                cudaMallocFromPoolAsync(&workspace->data, bytes, pool, stream));
  return KernelStatus::Ok();
}

KernelStatus release_workspace(const Workspace& workspace, cudaStream_t stream) {
  SCAN_CUDA_TRY("cuda_cumprod: cudaFreeAsync", cudaFreeAsync(workspace.data, stream));
  return KernelStatus::Ok();
}

namespace {

KernelStatus invalid(const std::string& message) {
  return {KernelStatus::Code::kInvalidArgument, "cuda_cumprod: " + message};
}

// A host pointer or one of another device would fault inside the kernel, and a fault poisons the
// whole CUDA context; refusing it here keeps the process usable.
KernelStatus check_device_pointer(const void* pointer, const char* name) {
  cudaPointerAttributes attributes = {};
  SCAN_CUDA_TRY("cuda_cumprod: cudaPointerGetAttributes",
                cudaPointerGetAttributes(&attributes, pointer));
  if (attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged) {
    return invalid(std::string(name) + " is not device memory");
  }
  int device = 0;
  SCAN_CUDA_TRY("cuda_cumprod: cudaGetDevice", cudaGetDevice(&device));
  if (attributes.type == cudaMemoryTypeDevice && attributes.device != device) {
    return invalid(std::string(name) + " lives on device " + std::to_string(attributes.device) +
                   ", the current device is " + std::to_string(device));
  }
  return KernelStatus::Ok();
}

}  // namespace
}  // namespace cuda_detail

KernelStatus cuda_cumprod(const void* in, void* out, ScanShape shape, DType dtype,
                          CudaStream stream) {
  using namespace cuda_detail;
  if (shape.outer < 0 || shape.length < 0 || shape.inner < 0) {
    return invalid("negative extent in shape");
  }
  const std::size_t element = element_size(dtype);
  if (element == 0) return invalid("unknown dtype");
  if (shape.outer == 0 || shape.length == 0 || shape.inner == 0) return KernelStatus::Ok();
  const std::int64_t max_elements =
      std::numeric_limits<std::int64_t>::max() / static_cast<std::int64_t>(element);
  if (shape.length > max_elements / shape.outer ||
      shape.inner > max_elements / (shape.outer * shape.length)) {
    return invalid("shape has more elements than memory can address");
  }
  if (in == nullptr || out == nullptr) return invalid("null tensor pointer");
  const auto bytes = static_cast<std::uintptr_t>(shape.numel()) * element;
  const auto in_begin = reinterpret_cast<std::uintptr_t>(in);
  const auto out_begin = reinterpret_cast<std::uintptr_t>(out);
  if (in_begin != out_begin && in_begin < out_begin + bytes && out_begin < in_begin + bytes) {
    return invalid("input and output overlap without being the same tensor");
  }
  if (in_begin % element != 0 || out_begin % element != 0) {
    return invalid("tensor pointer not aligned to its element size");
  }
  KernelStatus status = check_device_pointer(in, "input");
  if (status.ok()) status = check_device_pointer(out, "output");
  if (!status.ok()) return status;

  switch (dtype) {
    case DType::kFloat32:
      return dispatch_cumprod<Float32Traits>(in, out, shape, stream);
    case DType::kFloat64:
      return dispatch_cumprod<Float64Traits>(in, out, shape, stream);
    case DType::kFloat16:
      return dispatch_cumprod<Float16Traits>(in, out, shape, stream);
    case DType::kBFloat16:
      return dispatch_cumprod<BFloat16Traits>(in, out, shape, stream);
  }
  return invalid("unknown dtype");
}

bool cuda_device_available() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();  // a failed query must not linger as the next caller's error
    return false;
  }
  int device = 0;
  int major = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return major >= 8;
}

std::string cuda_device_description() {
  int count = 0;
  cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    cudaGetLastError();
    return std::string("no usable CUDA device: ") + cudaGetErrorString(error);
  }
  if (count == 0) return "no CUDA device";
  int device = 0;
  cudaDeviceProp props = {};
  error = cudaGetDevice(&device);
  if (error == cudaSuccess) error = cudaGetDeviceProperties(&props, device);
  if (error != cudaSuccess) {
    cudaGetLastError();
    return std::string("CUDA device query failed: ") + cudaGetErrorString(error);
  }
  return std::string(props.name) + ", sm_" + std::to_string(props.major) +
         std::to_string(props.minor) + ", " + std::to_string(props.multiProcessorCount) + " SMs, " +
         std::to_string(props.totalGlobalMem >> 20) + " MiB";
}

}  // namespace scan::kernels

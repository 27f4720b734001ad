// Dispatch: picks the kernel family, the access width and the tile shape for one call, and launches
// it. Included only by the per-dtype translation units, which instantiate dispatch_cumprod once
// each so that the four element types compile in parallel.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "agent/agent_contig.cuh"
#include "agent/agent_strided.cuh"
#include "block/tile_state.cuh"
#include "dispatch/policy.cuh"
#include "dispatch/workspace.cuh"

namespace scan::kernels::cuda_detail {

inline bool aligned_to(const void* pointer, std::uintptr_t bytes) {
  return reinterpret_cast<std::uintptr_t>(pointer) % bytes == 0;
}

// Launches `launch(state)` with look-back state for `tiles` tiles of `width` accumulators.
template <typename Acc, typename Launch>
KernelStatus with_lookback_state(long long tiles, int width, cudaStream_t stream, Launch launch) {
  Workspace workspace;
  KernelStatus status = acquire_workspace(TileState<Acc>::bytes(tiles, width),
                                          tiles * sizeof(unsigned long long), stream, &workspace);
  if (!status.ok()) return status;
  status = launch(TileState<Acc>::carve(workspace.data, tiles, width, workspace.tag));
  // Freed even after a failed launch: the free is stream-ordered behind whatever did run.
  const KernelStatus released = release_workspace(workspace, stream);
  return status.ok() ? released : status;
}

enum class StridedStaging { kAuto, kShared, kRegisters };

// SCAN_CUDA_STRIDED_STAGING=shared or =registers forces where strided scans keep their rows (for
// measuring one against the other); unset or anything else, kAuto. Read once.
inline StridedStaging strided_staging_override() {
  static const StridedStaging staging = [] {
    const char* value = std::getenv("SCAN_CUDA_STRIDED_STAGING");
    if (value != nullptr && std::strcmp(value, "shared") == 0) return StridedStaging::kShared;
    if (value != nullptr && std::strcmp(value, "registers") == 0) return StridedStaging::kRegisters;
    return StridedStaging::kAuto;
  }();
  return staging;
}

// Whether a strided scan of `bytes` input stages its rows in shared memory (agent_strided.cuh).
// By default on sm_90 and later from ScanPolicy::kStagedMinBytes, where it was measured faster;
// sm_80 fits only one staged block per multiprocessor, and it was not measured there.
inline bool use_strided_staging(long long bytes, long long min_bytes) {
  switch (strided_staging_override()) {
    case StridedStaging::kShared:
      return true;
    case StridedStaging::kRegisters:
      return false;
    case StridedStaging::kAuto:
      break;
  }
  if (bytes < min_bytes) return false;
  int device = 0;
  int major = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
    return false;  // the register path reports the error, if it persists, at its launch
  }
  return major >= 9;
}

// Raises kKernel's dynamic shared memory limit to `bytes` (nothing to do for 0) on the current
// device, once per kernel and device (the attribute is per device; up to 64 devices are remembered,
// beyond that it is set on every launch). The kernel is a template argument so that each kernel has
// its own record: kernels of one signature share a function pointer type.
template <auto kKernel>
KernelStatus allow_dynamic_shared(int bytes) {
  if (bytes == 0) return {};
  static std::atomic<unsigned long long> configured{0};
  int device = 0;
  cudaError_t error = cudaGetDevice(&device);
  if (error != cudaSuccess) return cuda_error("cuda_cumprod: cudaGetDevice", error);
  const unsigned long long bit = device < 64 ? 1ULL << device : 0;
  if (bit != 0 && (configured.load(std::memory_order_acquire) & bit) != 0) return {};
  error = cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (error != cudaSuccess) {
    return cuda_error("cuda_cumprod: cudaFuncSetAttribute(MaxDynamicSharedMemorySize)", error);
  }
  configured.fetch_or(bit, std::memory_order_acq_rel);
  return {};
}

template <typename Traits, int kVec, bool kStaged>
KernelStatus launch_strided(const typename Traits::Storage* in, typename Traits::Storage* out,
                            ScanShape shape, cudaStream_t stream) {
  using Policy = ScanPolicy<Traits>;
  using Acc = typename Traits::Acc;

  StridedParams params;
  params.length = shape.length;
  params.inner = shape.inner;
  params.inner_packets = shape.inner / kVec;
  // Up to 32 packets (512 bytes of a row) side by side: a warp's row load is then whole 128-byte
  // lines, and the rest of the block goes to more rows, i.e. more loads in flight per column.
  params.log2_columns = 0;
  while ((1LL << params.log2_columns) < params.inner_packets && params.log2_columns < 5) {
    ++params.log2_columns;
  }
  const int columns = 1 << params.log2_columns;
  params.column_groups = ceil_div(params.inner_packets, columns);
  params.chains = shape.outer * params.column_groups;
  params.rows_per_tile = static_cast<long long>(Policy::kBlockThreads / columns) *
                         strided_rows_per_thread<Traits, kStaged>();
  const long long chunks = ceil_div(shape.length, params.rows_per_tile);
  params.chunks = chunks;
  const long long tiles = chunks * params.chains;
  if (tiles > INT_MAX) {
    return {KernelStatus::Code::kUnsupported, "cuda_cumprod: tensor needs more than 2^31 tiles"};
  }

  const dim3 grid(static_cast<unsigned>(tiles));
  const dim3 block(Policy::kBlockThreads);
  const int dynamic_shared = kStaged ? strided_staged_bytes<Traits>() : 0;
  if (chunks == 1) {
    constexpr auto kernel = strided_cumprod_kernel<Traits, kVec, false, kStaged>;
    const KernelStatus allowed = allow_dynamic_shared<kernel>(dynamic_shared);
    if (!allowed.ok()) return allowed;
    kernel<<<grid, block, dynamic_shared, stream>>>(in, out, params, {});
    return check_launch("cuda_cumprod: strided cumprod kernel");
  }
  constexpr auto kernel = strided_cumprod_kernel<Traits, kVec, true, kStaged>;
  const KernelStatus allowed = allow_dynamic_shared<kernel>(dynamic_shared);
  if (!allowed.ok()) return allowed;
  return with_lookback_state<Acc>(tiles, columns * kVec, stream, [&](TileState<Acc> state) {
    kernel<<<grid, block, dynamic_shared, stream>>>(in, out, params, state);
    return check_launch("cuda_cumprod: strided cumprod kernel (look-back)");
  });
}

template <typename Traits, int kVec>
KernelStatus launch_contig(const typename Traits::Storage* in, typename Traits::Storage* out,
                           ScanShape shape, cudaStream_t stream) {
  using Policy = ScanPolicy<Traits>;
  using State = ScalarTileState<typename Traits::Acc>;

  // Rows shorter than a full tile get a block just wide enough (whole warps) to cover them, so
  // short-row batches keep every launched thread busy instead of idling most of each block.
  const long long threads = std::min<long long>(
      Policy::kBlockThreads, ceil_div(ceil_div(shape.length, Policy::kContigItems), 32) * 32);
  ContigParams params;
  params.length = shape.length;
  params.rows = shape.outer;
  params.tile_elems = threads * Policy::kContigItems;
  const long long chunks = ceil_div(shape.length, params.tile_elems);
  params.chunks = chunks;
  const long long tiles = chunks * shape.outer;
  if (tiles > INT_MAX) {
    return {KernelStatus::Code::kUnsupported, "cuda_cumprod: tensor needs more than 2^31 tiles"};
  }
  const dim3 block(static_cast<unsigned>(threads));

  // A walk keeps one block per row busy for the row's whole length, so it needs rows enough to
  // give every multiprocessor a few blocks; fewer, longer rows spread their tiles with look-back.
  int device = 0;
  int multiprocessors = 0;
  cudaError_t error = cudaGetDevice(&device);
  if (error == cudaSuccess) {
    error = cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device);
  }
  if (error != cudaSuccess)
    return cuda_error("cuda_cumprod: querying the multiprocessor count", error);
  const bool walk =
      chunks == 1 || (chunks <= Policy::kContigMaxWalkChunks &&
                      shape.outer >= 2LL * Policy::kContigWalkBlocksPerSm * multiprocessors);
  if (walk) {
    contig_cumprod_kernel<Traits, kVec, false>
        <<<dim3(static_cast<unsigned>(shape.outer)), block, 0, stream>>>(in, out, params, {});
    return check_launch("cuda_cumprod: contiguous cumprod kernel");
  }
  Workspace workspace;
  // Under graph capture the descriptors are zeroed whole: their flags are their first halves.
  KernelStatus status =
      acquire_workspace(State::bytes(tiles), State::bytes(tiles), stream, &workspace);
  if (!status.ok()) return status;
  contig_cumprod_kernel<Traits, kVec, true>
      <<<dim3(static_cast<unsigned>(tiles)), block, 0, stream>>>(
          in, out, params, State::carve(workspace.data, workspace.tag));
  status = check_launch("cuda_cumprod: contiguous cumprod kernel (look-back)");
  // Freed even after a failed launch: the free is stream-ordered behind whatever did run.
  const KernelStatus released = release_workspace(workspace, stream);
  return status.ok() ? released : status;
}

// Arguments are validated by the caller: numel > 0, device pointers, no partial overlap.
template <typename Traits>
KernelStatus dispatch_cumprod(const void* in_bytes, void* out_bytes, ScanShape shape,
                              cudaStream_t stream) {
  using Storage = typename Traits::Storage;
  constexpr int kVec = ScanPolicy<Traits>::kVec;
  const auto* in = static_cast<const Storage*>(in_bytes);
  auto* out = static_cast<Storage*>(out_bytes);
  const bool aligned = aligned_to(in, 16) && aligned_to(out, 16);

  if (shape.inner == 1) {
    // Packets stay aligned if every row starts on a packet boundary; a single row may end ragged.
    if (aligned && (shape.outer == 1 || shape.length % kVec == 0)) {
      return launch_contig<Traits, kVec>(in, out, shape, stream);
    }
    return launch_contig<Traits, 1>(in, out, shape, stream);
  }
  if (aligned && shape.inner % kVec == 0) {
    const long long bytes = shape.numel() * static_cast<long long>(sizeof(Storage));
    if (use_strided_staging(bytes, ScanPolicy<Traits>::kStagedMinBytes)) {
      return launch_strided<Traits, kVec, true>(in, out, shape, stream);
    }
    return launch_strided<Traits, kVec, false>(in, out, shape, stream);
  }
  return launch_strided<Traits, 1, false>(in, out, shape, stream);
}

}  // namespace scan::kernels::cuda_detail

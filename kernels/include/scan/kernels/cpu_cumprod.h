// Native CPU cumprod over the (outer, length, inner) view: a direct vectorised recurrence, not
// LibTorch and no log/exp rewrite, so zeros, NaN, infinities and signs propagate as in a sequential
// product. Every dtype accumulates in float64 and each result is rounded once to its type (the
// 16-bit types through float32, as LibTorch converts); contiguous float64 rows re-anchor their
// running product on a compensated one, so that their error does not grow with the row's length.
#pragma once

#include <cstdint>

#include "scan/kernels/types.h"

namespace scan::kernels {

class ThreadPool;

// Instruction sets the kernel has a build of. kAuto picks the best one the CPU supports.
enum class CpuIsa : std::uint8_t { kAuto, kGeneric, kAvx2, kAvx512 };

const char* cpu_isa_name(CpuIsa isa);
// Whether `isa` was compiled in and the running CPU (and OS) supports it; kAuto and kGeneric
// always are.
bool cpu_isa_supported(CpuIsa isa);
// What kAuto resolves to on this machine.
CpuIsa cpu_best_isa();

struct CpuScanOptions {
  // Null: run on the calling thread only.
  ThreadPool* pool = nullptr;
  // Upper bound on threads for this call, caller included; <= 0 means everything the pool has.
  // Small tensors use fewer threads than allowed, because waking a worker costs more than it saves.
  int max_parallelism = 0;
  // Forcing a specific ISA is for tests and benchmarks; one the CPU lacks yields kUnsupported.
  CpuIsa isa = CpuIsa::kAuto;
  // Results below the dtype's smallest normal number become 0 instead of subnormals, on every
  // thread of the call (see float_env.h for why and what it costs in accuracy). Off: exact IEEE
  // products, subnormals included, as a sequential loop or torch.cumprod computes them.
  bool flush_subnormals = false;
};

// out[o, l, i] = prod_{k <= l} in[o, k, i] for the contiguous row-major tensors `in` and `out`
// (same dtype and shape). `in` and `out` may be the same pointer (in place) but must not otherwise
// overlap. An empty shape is a no-op. Thread-safe: concurrent calls may share one pool.
KernelStatus cpu_cumprod(const void* in, void* out, ScanShape shape, DType dtype,
                         const CpuScanOptions& options = {});

}  // namespace scan::kernels

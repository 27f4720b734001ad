// The planner's thresholds of cpu_cumprod(), exposed for tests (which reach every code path on
// small tensors by lowering them) and for benchmarks. Servers call cpu_cumprod(), which uses the
// defaults below.
#pragma once

#include <cstdint>

#include "scan/kernels/cpu_cumprod.h"

namespace scan::kernels {

struct CpuTuning {
  // Each extra thread should get at least this many elements: waking a sleeping worker costs
  // around ten microseconds, about what one core needs for 256K cache-resident elements.
  std::int64_t min_thread_elements = std::int64_t{1} << 18;
  // Tensors of at least this many bytes write their results with non-temporal stores (where
  // vectors are aligned): input and output together are then four times the last-level cache
  // (32 MiB on the reference machine), the output cannot stay cached anyway, and each output line
  // costs one write instead of a read for ownership plus a write. Measured there: 64 MiB bf16
  // rows and 256 MiB f32 tiles ~10% faster streaming; a 32 MiB f32 tensor ~15% slower (part of it
  // stays cached across calls), hence 64 MiB. Negative: never.
  std::int64_t streaming_min_bytes = std::int64_t{64} << 20;
  // Fewer sequences than threads: each sequence is cut into blocks of at most this many input
  // bytes, scanned in one pass with a carry handed from block to block (see cpu_cumprod.cc).
  // Small enough that a block read once stays in a core's L2 for its second (scanning) read.
  std::int64_t chain_block_bytes = std::int64_t{256} << 10;
  // A block of the chained scan whose predecessor's carry is this late computes it itself from the
  // nearest published one (same operations, same result): a preempted partner thread then costs
  // a re-read of a few blocks instead of its whole time slice. About two block times.
  std::int64_t chain_help_after_us = 50;
  // Let the AVX-512 build round bfloat16 results with AVX512-BF16 where the CPU has it.
  bool bf16_instructions = true;
};

// cpu_cumprod() with explicit thresholds.
KernelStatus cpu_cumprod_tuned(const void* in, void* out, ScanShape shape, DType dtype,
                               const CpuScanOptions& options, const CpuTuning& tuning);

}  // namespace scan::kernels

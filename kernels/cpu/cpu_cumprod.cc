// Planner of the native CPU cumprod: validates, picks the instruction-set build, splits the tensor
// into tasks for the pool and calls the leaf kernels of cumprod_isa.h. Compiled for baseline
// x86-64; only the leaf kernels carry AVX flags.
#include "scan/kernels/cpu_cumprod.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "cumprod_isa.h"
#include "scan/kernels/cpu_cumprod_tuning.h"
#include "scan/kernels/float_env.h"
#include "scan/kernels/thread_pool.h"

#if defined(SCAN_CPU_X86_ISAS)
#include <cpuid.h>
#endif

namespace scan::kernels {
namespace {

// A task should stream at least this many elements, or claiming it (an atomic, cold caches)
// becomes a visible share of its cost.
constexpr std::int64_t kMinTaskElements = std::int64_t{1} << 15;
// A block of the chained scan should stream at least this many elements, so that handing the
// carry on (an acquire load, maybe a short wait) stays a small share of its cost.
constexpr std::int64_t kMinChainBlockElements = std::int64_t{1} << 13;
// A core's L2 in bytes, 0 where the C library cannot tell. Read once (sysconf runs CPUID).
std::int64_t level2_cache_bytes() {
#if defined(_SC_LEVEL2_CACHE_SIZE)
  static const std::int64_t bytes = std::max<long>(0, sysconf(_SC_LEVEL2_CACHE_SIZE));
  return bytes;
#else
  return 0;
#endif
}

// Tasks per thread when the shape allows, so dynamic claiming evens out cores that are shared
// with other requests.
constexpr std::int64_t kTasksPerThread = 4;
// Lane tiles stay this narrow so the carry row of a tile fits in L1 next to the streamed rows.
constexpr std::int64_t kMaxTileLanes = 2048;
// Splitting `inner` for parallelism stops at this many bytes per row piece: narrower pieces turn
// a streamed block into scattered short reads.
constexpr std::int64_t kMinTileBytes = 512;

#if defined(SCAN_CPU_X86_ISAS)
// Probed once per process: CPUID traps to the hypervisor in a VM, and probing on every call was
// measured at 7 microseconds here, more than a small scan takes.
struct CpuFeatures {
  bool avx2 = false;
  bool avx512 = false;
  bool avx512bf16 = false;

  CpuFeatures() {
    // CPUID leaf 1, ECX bit 29: clang 14 (the sanitizer and fuzzing builds) rejects "f16c" in
    // __builtin_cpu_supports.
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
    __builtin_cpu_init();
    avx2 = f16c && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    avx512 = f16c && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    // CPUID leaf 7 subleaf 1, EAX bit 5 (spelled out for the same clang 14 reason).
    avx512bf16 =
        avx512 && __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) != 0 && (eax & (1u << 5)) != 0;
  }
};

const CpuFeatures& cpu_features() {
  static const CpuFeatures features;
  return features;
}

bool cpu_has_avx2() { return cpu_features().avx2; }
bool cpu_has_avx512() { return cpu_features().avx512; }
bool cpu_has_avx512bf16() { return cpu_features().avx512bf16; }
#endif

const cpu::IsaKernels* kernels_for(CpuIsa isa, bool bf16_instructions = true) {
  switch (isa) {
    case CpuIsa::kAuto:
      return kernels_for(cpu_best_isa(), bf16_instructions);
    case CpuIsa::kGeneric:
      return &cpu::generic_kernels();
#if defined(SCAN_CPU_X86_ISAS)
    case CpuIsa::kAvx2:
      return cpu_has_avx2() ? &cpu::avx2_kernels() : nullptr;
    case CpuIsa::kAvx512:
      if (!cpu_has_avx512()) return nullptr;
      return bf16_instructions && cpu_has_avx512bf16() ? &cpu::avx512bf16_kernels()
                                                       : &cpu::avx512_kernels();
#else
    case CpuIsa::kAvx2:
    case CpuIsa::kAvx512:
      return nullptr;
#endif
  }
  return nullptr;
}

const cpu::DTypeKernels* dtype_kernels(const cpu::IsaKernels& isa, DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return &isa.float32;
    case DType::kFloat64:
      return &isa.float64;
    case DType::kFloat16:
      return &isa.float16;
    case DType::kBFloat16:
      return &isa.bfloat16;
  }
  return nullptr;
}

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// The tensor as `groups` independent sequences of rows: a group is one outer block restricted to
// a tile of lanes (inner > 1), or one contiguous row (inner == 1). A is the accumulator type.
template <typename A>
class Plan {
 public:
  Plan(const cpu::DTypeKernels& kernels, const char* in, char* out, ScanShape shape,
       std::int64_t element_bytes, ThreadPool* pool, int threads, bool flush_subnormals,
       const CpuTuning& tuning)
      : kernels_(kernels),
        in_(in),
        out_(out),
        shape_(shape),
        element_bytes_(element_bytes),
        pool_(pool),
        threads_(threads),
        flush_subnormals_(flush_subnormals),
        chain_block_bytes_(tuning.chain_block_bytes),
        help_after_(
            std::chrono::microseconds(std::max<std::int64_t>(0, tuning.chain_help_after_us))) {
    tile_ = 1;
    if (shape.inner > 1) {
      tile_ = std::min(shape.inner, kMaxTileLanes);
      const std::int64_t wanted_groups = threads_ * kTasksPerThread;
      const std::int64_t min_tile = std::max<std::int64_t>(1, kMinTileBytes / element_bytes);
      if (threads_ > 1 && shape.outer * ceil_div(shape.inner, tile_) < wanted_groups) {
        const std::int64_t tiles = ceil_div(wanted_groups, shape.outer);
        tile_ = std::max(min_tile, ceil_div(shape.inner, tiles));
        // Whole cache lines per piece, so neighbouring tiles never share a line being written.
        const std::int64_t line = std::max<std::int64_t>(1, 64 / element_bytes);
        tile_ = ceil_div(tile_, line) * line;
        tile_ = std::min(tile_, std::min(shape.inner, kMaxTileLanes));
      }
    }
    tiles_ = ceil_div(shape.inner, tile_);
    groups_ = shape.outer * tiles_;
    streaming_ = tuning.streaming_min_bytes >= 0 &&
                 shape.numel() * element_bytes >= tuning.streaming_min_bytes;
  }

  void run() {
    const std::int64_t group_elements = shape_.length * tile_;
    if (groups_ < threads_) {
      // Too few sequences to occupy every thread: cut each along its length into blocks, a few
      // per thread, at most chain_block_bytes each.
      const std::int64_t wanted_blocks = ceil_div(threads_ * kTasksPerThread, groups_);
      const std::int64_t row_bytes = tile_ * element_bytes_;
      std::int64_t block_rows = std::max<std::int64_t>(1, chain_block_bytes_ / row_bytes);
      block_rows = std::min(block_rows, ceil_div(shape_.length, wanted_blocks));
      block_rows = std::max(block_rows, ceil_div(kMinChainBlockElements, tile_));
      if (block_rows < shape_.length) return run_chained(block_rows);
    }

    const std::int64_t per_task = std::max(ceil_div(kMinTaskElements, group_elements),
                                           ceil_div(groups_, threads_ * kTasksPerThread));
    const std::int64_t tasks = ceil_div(groups_, per_task);
    parallel(tasks, [&](std::int64_t task) {
      const std::int64_t first = task * per_task;
      const std::int64_t last = std::min(groups_, first + per_task);
      if (shape_.inner == 1 && shape_.length <= cpu::kMaxShortRow) {
        kernels_.scan_short_rows(in_at(first * shape_.length), out_at(first * shape_.length),
                                 last - first, shape_.length);
        return;
      }
      std::array<A, kMaxTileLanes> carry;
      for (std::int64_t group = first; group < last; ++group) {
        std::fill_n(carry.begin(), width(group), A(1));
        scan(group, 0, shape_.length, carry.data());
      }
    });
  }

 private:
  // A single-pass scan of blocks handed a carry from their predecessor, in the manner of a
  // decoupled look-back. Tasks are claimed in block order (block-major across groups), so a
  // block's predecessor is always claimed earlier by a running thread and waiting cannot
  // deadlock. Block 0 of each group scans at once and passes its last result on. A later block
  // first multiplies up its own elements (a read that leaves the block in this core's L2), waits
  // for its predecessor's carry, passes carry x product on at once, and then scans the block from
  // L2. Memory sees each element read once and written once, like a sequential scan, where the
  // former reduce-then-rescan read 1.4x the bytes; the last block skips the product (nobody needs
  // it) and scans as soon as its carry arrives. Only block products are reassociated, so zeros,
  // NaN, infinities and signs still propagate like the sequential product.
  void run_chained(std::int64_t block_rows) {
    const std::int64_t blocks = ceil_div(shape_.length, block_rows);
    std::vector<A> carries(static_cast<std::size_t>(groups_ * blocks * tile_));
    std::vector<std::atomic<std::uint8_t>> ready(static_cast<std::size_t>(groups_ * blocks));
    auto index = [&](std::int64_t group, std::int64_t block) {
      return static_cast<std::size_t>(group * blocks + block);
    };
    auto slot = [&](std::int64_t group, std::int64_t block) {
      return carries.data() + (group * blocks + block) * tile_;
    };
    // Blocks of one sequence go to threads in order, so a thread's next one is likely `threads_`
    // blocks on. Its row scan (from L2, compute-bound) pulls that one into L2 as it goes, and
    // multiplying it up then reads L2 instead of waiting on memory at one core's bandwidth: 2
    // threads on 2^26 float32 elements 17-19% faster on an Ice Lake VM (bench/RESULTS.md). Only
    // for one sequence (with several, the next task is another sequence's block), and only where
    // L2 holds this block's input and output and the next one's input with room to spare; smaller
    // L2s (AMD Zen 3: 512 KiB) keep the plain scan, unmeasured with it.
    const std::int64_t block_bytes = block_rows * tile_ * element_bytes_;
    const bool prefetch_next = groups_ == 1 && level2_cache_bytes() >= 4 * block_bytes;

    parallel(groups_ * blocks, [&](std::int64_t task) {
      const std::int64_t block = task / groups_;
      const std::int64_t group = task % groups_;
      const std::int64_t row = block * block_rows;
      const std::int64_t rows = std::min(block_rows, shape_.length - row);
      const std::int64_t lanes = width(group);
      const bool last = block + 1 == blocks;
      A* mine = slot(group, block);
      const std::int64_t ahead_rows =
          prefetch_next && block + threads_ < blocks ? threads_ * block_rows : 0;
      std::array<A, kMaxTileLanes> carry;
      if (block == 0) {
        std::fill_n(carry.begin(), lanes, A(1));
        scan(group, row, rows, carry.data(), ahead_rows);
        if (last) return;
        std::copy_n(carry.begin(), lanes, mine);
        ready[index(group, block)].store(1, std::memory_order_release);
        return;
      }
      if (!last) {
        std::fill_n(mine, lanes, A(1));
        reduce(group, row, rows, mine);
      }
      carry_into(group, block, block_rows, ready, slot, carry.data());
      if (!last) {
        for (std::int64_t lane = 0; lane < lanes; ++lane) mine[lane] = carry[lane] * mine[lane];
        ready[index(group, block)].store(1, std::memory_order_release);
      }
      scan(group, row, rows, carry.data(), ahead_rows);
    });
  }

  // The carry entering `block`: its predecessor's published one. A predecessor late by more than
  // help_after_ (its thread preempted on a shared machine, typically for a whole time slice) is
  // not waited for: this thread takes the nearest published carry and multiplies in the block
  // products in between itself, the very operations their owners perform, so the bits are the
  // same either way. Only block 0's carry (a scan, not a product) is always waited for, and in
  // place nothing is computed twice: a block's input is overwritten once its carry is out, so a
  // helper could read results instead of inputs.
  template <typename Ready, typename Slot>
  void carry_into(std::int64_t group, std::int64_t block, std::int64_t block_rows,
                  const Ready& ready, const Slot& slot, A* carry) const {
    const std::int64_t lanes = width(group);
    auto is_ready = [&](std::int64_t at) {
      return ready[static_cast<std::size_t>(group * (ready.size() / groups_) + at)].load(
                 std::memory_order_acquire) != 0;
    };
    const auto deadline = std::chrono::steady_clock::now() + help_after_;
    for (int spins = 0; !is_ready(block - 1); ++spins) {
      if (spins % 64 != 63 || std::chrono::steady_clock::now() < deadline) {
        cpu_relax();
        continue;
      }
      if (in_ == out_) {
        std::this_thread::yield();
      } else {
        std::int64_t from = block - 1;
        while (from > 0 && !is_ready(from)) --from;
        if (from == 0) {
          while (!is_ready(0)) std::this_thread::yield();
        }
        std::copy_n(slot(group, from), lanes, carry);
        std::array<A, kMaxTileLanes> product;
        for (std::int64_t between = from + 1; between < block; ++between) {
          std::fill_n(product.begin(), lanes, A(1));
          const std::int64_t row = between * block_rows;
          reduce(group, row, std::min(block_rows, shape_.length - row), product.data());
          for (std::int64_t lane = 0; lane < lanes; ++lane)
            carry[lane] = carry[lane] * product[lane];
        }
        return;
      }
    }
    std::copy_n(slot(group, block - 1), lanes, carry);
  }

  template <typename Body>
  void parallel(std::int64_t tasks, Body&& body) {
    // The floating-point mode is per thread: pool workers set it per task and restore it, so
    // that it never leaks into another caller's work.
    if (pool_ != nullptr && threads_ > 1 && tasks > 1) {
      pool_->parallel_for(tasks, threads_, [&](std::int64_t task) {
        const ScopedFlushSubnormals flush(flush_subnormals_);
        body(task);
      });
    } else {
      const ScopedFlushSubnormals flush(flush_subnormals_);
      for (std::int64_t task = 0; task < tasks; ++task) body(task);
    }
  }

  std::int64_t width(std::int64_t group) const {
    return std::min(tile_, shape_.inner - (group % tiles_) * tile_);
  }
  // Element offset of (group, row, first lane of the group's tile).
  std::int64_t offset(std::int64_t group, std::int64_t row) const {
    const std::int64_t outer = group / tiles_;
    return (outer * shape_.length + row) * shape_.inner + (group % tiles_) * tile_;
  }
  const char* in_at(std::int64_t element) const { return in_ + element * element_bytes_; }
  char* out_at(std::int64_t element) const { return out_ + element * element_bytes_; }

  // `ahead_rows` > 0: a row scan also pulls the input that many rows ahead into L2 as it goes.
  void scan(std::int64_t group, std::int64_t row, std::int64_t rows, A* carry,
            std::int64_t ahead_rows = 0) const {
    const std::int64_t at = offset(group, row);
    if (shape_.inner == 1) {
      (streaming_ ? kernels_.scan_row_streaming : kernels_.scan_row)(in_at(at), out_at(at), rows,
                                                                     carry, ahead_rows);
    } else {
      (streaming_ ? kernels_.scan_tile_streaming : kernels_.scan_tile)(
          in_at(at), out_at(at), rows, width(group), shape_.inner, carry);
    }
  }

  void reduce(std::int64_t group, std::int64_t row, std::int64_t rows, A* acc) const {
    const std::int64_t at = offset(group, row);
    if (shape_.inner == 1) {
      kernels_.reduce_row(in_at(at), rows, acc);
    } else {
      kernels_.reduce_tile(in_at(at), rows, width(group), shape_.inner, acc);
    }
  }

  const cpu::DTypeKernels& kernels_;
  const char* in_;
  char* out_;
  ScanShape shape_;
  std::int64_t element_bytes_;
  ThreadPool* pool_;
  std::int64_t threads_;
  bool flush_subnormals_;
  std::int64_t chain_block_bytes_;
  std::chrono::steady_clock::duration help_after_;
  std::int64_t tile_ = 1;
  std::int64_t tiles_ = 1;
  std::int64_t groups_ = 1;
  bool streaming_ = false;
};

}  // namespace

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAuto:
      return "auto";
    case CpuIsa::kGeneric:
      return "generic";
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

bool cpu_isa_supported(CpuIsa isa) { return isa == CpuIsa::kAuto || kernels_for(isa) != nullptr; }

CpuIsa cpu_best_isa() {
#if defined(SCAN_CPU_X86_ISAS)
  if (cpu_has_avx512()) return CpuIsa::kAvx512;
  if (cpu_has_avx2()) return CpuIsa::kAvx2;
#endif
  return CpuIsa::kGeneric;
}

KernelStatus cpu_cumprod(const void* in, void* out, ScanShape shape, DType dtype,
                         const CpuScanOptions& options) {
  return cpu_cumprod_tuned(in, out, shape, dtype, options, CpuTuning{});
}

KernelStatus cpu_cumprod_tuned(const void* in, void* out, ScanShape shape, DType dtype,
                               const CpuScanOptions& options, const CpuTuning& tuning) {
  using Code = KernelStatus::Code;
  if (shape.outer < 0 || shape.length < 0 || shape.inner < 0) {
    return {Code::kInvalidArgument, "cpu_cumprod: negative dimension"};
  }
  std::int64_t total = 0;
  if (__builtin_mul_overflow(shape.outer, shape.length, &total) ||
      __builtin_mul_overflow(total, shape.inner, &total) ||
      __builtin_mul_overflow(total, static_cast<std::int64_t>(element_size(dtype)), &total)) {
    return {Code::kInvalidArgument, "cpu_cumprod: tensor size overflows"};
  }
  const cpu::IsaKernels* isa = kernels_for(options.isa, tuning.bf16_instructions);
  if (isa == nullptr) {
    return {Code::kUnsupported,
            std::string("cpu_cumprod: this CPU lacks ") + cpu_isa_name(options.isa)};
  }
  const cpu::DTypeKernels* kernels = dtype_kernels(*isa, dtype);
  if (kernels == nullptr) return {Code::kInvalidArgument, "cpu_cumprod: unknown dtype"};
  if (shape.numel() == 0) return KernelStatus::Ok();
  if (in == nullptr || out == nullptr) {
    return {Code::kInvalidArgument, "cpu_cumprod: null data pointer"};
  }

  int threads = 1;
  if (options.pool != nullptr) {
    threads = options.pool->max_parallelism();
    if (options.max_parallelism > 0) threads = std::min(threads, options.max_parallelism);
    threads = static_cast<int>(std::clamp<std::int64_t>(
        shape.numel() / std::max<std::int64_t>(1, tuning.min_thread_elements), 1, threads));
  }

  const auto* in_bytes = static_cast<const char*>(in);
  auto* out_bytes = static_cast<char*>(out);
  const auto bytes = static_cast<std::int64_t>(element_size(dtype));
  Plan<double>(*kernels, in_bytes, out_bytes, shape, bytes, options.pool, threads,
               options.flush_subnormals, tuning)
      .run();
  return KernelStatus::Ok();
}

}  // namespace scan::kernels

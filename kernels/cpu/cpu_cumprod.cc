// Planner of the native CPU cumprod: validates, picks the instruction-set build, splits the tensor
// into tasks for the pool and calls the leaf kernels of cumprod_isa.h. Compiled for baseline
// x86-64; only the leaf kernels carry AVX flags.
#include "scan/kernels/cpu_cumprod.h"

#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "cumprod_isa.h"
#include "scan/kernels/thread_pool.h"

#if defined(SCAN_CPU_X86_ISAS)
#include <cpuid.h>
#endif

namespace scan::kernels {
namespace {

// A task should stream at least this many elements, or claiming it (an atomic, cold caches)
// becomes a visible share of its cost.
constexpr std::int64_t kMinTaskElements = std::int64_t{1} << 15;
// Each extra thread should get at least this many elements: waking a sleeping worker costs
// around ten microseconds, about what one core needs for 256K cache-resident elements.
constexpr std::int64_t kMinThreadElements = std::int64_t{1} << 18;
// Tasks per thread when the shape allows, so dynamic claiming evens out cores that are shared
// with other requests.
constexpr std::int64_t kTasksPerThread = 4;
// Lane tiles stay this narrow so the carry row of a tile fits in L1 next to the streamed rows.
constexpr std::int64_t kMaxTileLanes = 2048;
// Splitting `inner` for parallelism stops at this many bytes per row piece: narrower pieces turn
// a streamed block into scattered short reads.
constexpr std::int64_t kMinTileBytes = 512;

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

#if defined(SCAN_CPU_X86_ISAS)
// Probed once per process: CPUID traps to the hypervisor in a VM, and probing on every call was
// measured at 7 microseconds here, more than a small scan takes.
struct CpuFeatures {
  bool avx2 = false;
  bool avx512 = false;

  CpuFeatures() {
    // CPUID leaf 1, ECX bit 29: clang 14 (the sanitizer and fuzzing builds) rejects "f16c" in
    // __builtin_cpu_supports.
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
    __builtin_cpu_init();
    avx2 = f16c && __builtin_cpu_supports("avx2");
    avx512 = f16c && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  }
};

const CpuFeatures& cpu_features() {
  static const CpuFeatures features;
  return features;
}

bool cpu_has_avx2() { return cpu_features().avx2; }
bool cpu_has_avx512() { return cpu_features().avx512; }
#endif

const cpu::IsaKernels* kernels_for(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAuto:
      return kernels_for(cpu_best_isa());
    case CpuIsa::kGeneric:
      return &cpu::generic_kernels();
#if defined(SCAN_CPU_X86_ISAS)
    case CpuIsa::kAvx2:
      return cpu_has_avx2() ? &cpu::avx2_kernels() : nullptr;
    case CpuIsa::kAvx512:
      return cpu_has_avx512() ? &cpu::avx512_kernels() : nullptr;
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

// The tensor as `groups` independent sequences of rows: a group is one outer block restricted to
// a tile of lanes (inner > 1), or one contiguous row (inner == 1). A is the accumulator type.
template <typename A>
class Plan {
 public:
  Plan(const cpu::DTypeKernels& kernels, const char* in, char* out, ScanShape shape,
       std::int64_t element_bytes, ThreadPool* pool, int threads)
      : kernels_(kernels),
        in_(in),
        out_(out),
        shape_(shape),
        element_bytes_(element_bytes),
        pool_(pool),
        threads_(threads) {
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
  }

  void run() {
    const std::int64_t group_elements = shape_.length * tile_;
    if (groups_ < threads_) {
      // Too few sequences to occupy every thread: cut each along its length, one chunk per thread
      // after a shorter first one.
      const std::int64_t later_chunks =
          std::min(ceil_div(threads_, groups_), group_elements / kMinTaskElements);
      if (later_chunks >= 2) return run_blocked(later_chunks);
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
  // Chunk products, carry, rescan. Phase one scans chunk 0 of every group (its carry is one) while
  // the other threads multiply up chunks 1 .. n-1; a short serial pass turns the products into
  // carries; phase two rescans chunks 1 .. n from their carries. Chunk 0 is 1/(2n+1) of the length
  // so that its scan (read + write) takes as long as one reduction (read) of the equal later
  // chunks: the extra read pass covers only n-1 of the 2n+1 parts, which matters when memory
  // bandwidth barely grows with threads. Only chunk products are reassociated, so zeros, NaN,
  // infinities and signs still propagate like the sequential product.
  void run_blocked(std::int64_t later_chunks) {
    const std::int64_t first_rows =
        std::max<std::int64_t>(1, shape_.length / (2 * later_chunks + 1));
    const std::int64_t later_rows = ceil_div(shape_.length - first_rows, later_chunks);
    const std::int64_t chunks = 1 + later_chunks;
    std::vector<A> carries(static_cast<std::size_t>(groups_ * chunks * tile_), A(1));
    auto slot = [&](std::int64_t group, std::int64_t chunk) {
      return carries.data() + (group * chunks + chunk) * tile_;
    };
    auto begin_of = [&](std::int64_t chunk) {
      return std::min(shape_.length, chunk == 0 ? 0 : first_rows + (chunk - 1) * later_rows);
    };
    auto rows_of = [&](std::int64_t chunk) {
      return (chunk + 1 == chunks ? shape_.length : begin_of(chunk + 1)) - begin_of(chunk);
    };

    // Task order puts the chunk-0 scans first, so they start earliest.
    parallel(groups_ * (chunks - 1), [&](std::int64_t task) {
      const std::int64_t chunk = task / groups_;
      const std::int64_t group = task % groups_;
      if (chunk == 0) {
        scan(group, 0, rows_of(0), slot(group, 0));
      } else {
        reduce(group, begin_of(chunk), rows_of(chunk), slot(group, chunk));
      }
    });
    for (std::int64_t group = 0; group < groups_; ++group) {
      for (std::int64_t chunk = 1; chunk + 1 < chunks; ++chunk) {
        A* running = slot(group, chunk);
        const A* before = slot(group, chunk - 1);
        for (std::int64_t lane = 0; lane < width(group); ++lane) {
          running[lane] = before[lane] * running[lane];
        }
      }
    }
    parallel(groups_ * (chunks - 1), [&](std::int64_t task) {
      const std::int64_t chunk = 1 + task / groups_;
      const std::int64_t group = task % groups_;
      scan(group, begin_of(chunk), rows_of(chunk), slot(group, chunk - 1));
    });
  }

  template <typename Body>
  void parallel(std::int64_t tasks, Body&& body) {
    if (pool_ != nullptr && threads_ > 1 && tasks > 1) {
      pool_->parallel_for(tasks, threads_, body);
    } else {
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

  void scan(std::int64_t group, std::int64_t row, std::int64_t rows, A* carry) const {
    const std::int64_t at = offset(group, row);
    if (shape_.inner == 1) {
      kernels_.scan_row(in_at(at), out_at(at), rows, carry);
    } else {
      kernels_.scan_tile(in_at(at), out_at(at), rows, width(group), shape_.inner, carry);
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
  std::int64_t tile_ = 1;
  std::int64_t tiles_ = 1;
  std::int64_t groups_ = 1;
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
  const cpu::IsaKernels* isa = kernels_for(options.isa);
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
    threads =
        static_cast<int>(std::clamp<std::int64_t>(shape.numel() / kMinThreadElements, 1, threads));
  }

  const auto* in_bytes = static_cast<const char*>(in);
  auto* out_bytes = static_cast<char*>(out);
  const auto bytes = static_cast<std::int64_t>(element_size(dtype));
  if (dtype == DType::kFloat64) {
    Plan<double>(*kernels, in_bytes, out_bytes, shape, bytes, options.pool, threads).run();
  } else {
    Plan<float>(*kernels, in_bytes, out_bytes, shape, bytes, options.pool, threads).run();
  }
  return KernelStatus::Ok();
}

}  // namespace scan::kernels

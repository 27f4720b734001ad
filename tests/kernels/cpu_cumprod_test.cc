// The native CPU cumprod against the float64 reference on fresh random inputs, for every dtype,
// shape class, instruction-set build this CPU supports, with and without a pool, in place or not.
#include "scan/kernels/cpu_cumprod.h"

#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "scan/kernels/cpu_cumprod_tuning.h"
#include "scan/kernels/float_env.h"
#include "scan/kernels/half.h"
#include "scan/kernels/reference.h"
#include "scan/kernels/thread_pool.h"

namespace scan::kernels {
namespace {

enum class Values { kDecay, kNegative, kSpecial, kSubnormal };
enum class PoolMode { kNone, kOneWorker, kThreeWorkers };

std::mt19937_64& rng() {
  // A fresh seed per run, printed on failure, so the suite keeps exploring new inputs.
  static std::mt19937_64 engine(std::random_device{}());
  return engine;
}

// Inputs as stored in `dtype` (so the reference sees exactly what the kernel sees). Values sit
// close enough to one that even 2^20 factors stay far from float underflow: a product that
// underflows in float but not in double would be a legitimate difference, not a bug.
std::vector<unsigned char> make_input(ScanShape shape, DType dtype, Values values,
                                      std::uint64_t seed) {
  std::mt19937_64 engine(seed);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const double spread =
      std::min(0.5, 4.0 / static_cast<double>(std::max<std::int64_t>(shape.length, 1)));
  std::vector<double> wide(static_cast<std::size_t>(shape.numel()));
  for (double& value : wide) {
    value = 1.0 - spread * unit(engine);
    if (values == Values::kNegative && unit(engine) < 0.3) value = -value;
  }
  if (values == Values::kSubnormal && !wide.empty()) {
    // Factors that take the products through the float32 subnormal range (and bfloat16's, which
    // is the same): where AVX512-BF16's conversion would flush to zero.
    const double tiny[] = {0x1p-127, 0x1p-131, -0x1.8p-129, 0x1p-100};
    std::uniform_int_distribution<std::size_t> where(0, wide.size() - 1);
    const std::size_t count = std::max<std::size_t>(4, wide.size() / 2000);
    for (std::size_t index = 0; index < count; ++index) {
      wide[where(engine)] = tiny[index % std::size(tiny)];
    }
  }
  if (values == Values::kSpecial && !wide.empty()) {
    const double specials[] = {0.0, -0.0, NAN, INFINITY, -INFINITY, -1.0};
    std::uniform_int_distribution<std::size_t> where(0, wide.size() - 1);
    const std::size_t count = std::max<std::size_t>(6, wide.size() / 500);
    for (std::size_t index = 0; index < count; ++index) {
      wide[where(engine)] = specials[index % std::size(specials)];
    }
  }
  std::vector<unsigned char> stored(wide.size() * element_size(dtype));
  narrow_from_f64(wide.data(), shape.numel(), dtype, stored.data());
  return stored;
}

// A sequential product in the kernel's accumulator (float64 for every dtype) with the same final
// rounding (through float32 for the 16-bit types): what the strided recurrence must reproduce bit
// for bit, since it performs the very same operations, and what every other path must match to
// within one unit in the last place of the stored type.
std::vector<double> sequential_emulation(const std::vector<double>& in, ScanShape shape,
                                         DType dtype) {
  std::vector<double> out(in.size());
  for (std::int64_t block = 0; block < shape.outer; ++block) {
    for (std::int64_t lane = 0; lane < shape.inner; ++lane) {
      double running = 1.0;
      for (std::int64_t step = 0; step < shape.length; ++step) {
        const std::size_t at =
            static_cast<std::size_t>((block * shape.length + step) * shape.inner + lane);
        running *= in[at];
        const float narrowed = static_cast<float>(running);
        switch (dtype) {
          case DType::kFloat64:
            out[at] = running;
            break;
          case DType::kFloat32:
            out[at] = narrowed;
            break;
          case DType::kFloat16:
            out[at] = float16_to_float(float_to_float16(narrowed));
            break;
          case DType::kBFloat16:
            out[at] = bfloat16_to_float(float_to_bfloat16(narrowed));
            break;
        }
      }
    }
  }
  return out;
}

bool same_value(double got, double want) {
  if (std::isnan(want)) return std::isnan(got);
  return got == want && std::signbit(got) == std::signbit(want);
}

// Tolerance against the float64 reference. Every dtype accumulates in float64: any product tree
// over n factors (sequential, the in-register Hillis-Steele scan, chunk products times carries)
// does at most n - 1 roundings plus a couple for the carries, each a relative 2^-53, and the
// result then rounds once to float32 (2^-24) and, for the 16-bit types, once more when stored
// (2^-11 float16, 2^-8 bfloat16). The absolute term covers results that land in the storage
// type's subnormal range, where relative precision is gone (half a subnormal step, doubled for
// safety), plus the accumulator's own subnormal steps.
struct Tolerance {
  double relative;
  double absolute;
};

Tolerance tolerance(DType dtype, std::int64_t length) {
  const double factors = static_cast<double>(length + 8);
  const double accumulated = factors * 0x1p-53;
  const double accumulator_subnormals = factors * 0x1p-1074;
  switch (dtype) {
    case DType::kFloat64:
      return {accumulated, accumulator_subnormals};
    case DType::kFloat32:
      return {0x1p-24 + accumulated, 0x1p-149 + accumulator_subnormals};
    case DType::kFloat16:
      return {0x1p-11 + 0x1p-24 + accumulated, 0x1p-24 + 0x1p-149 + accumulator_subnormals};
    case DType::kBFloat16:
      return {0x1p-8 + 0x1p-24 + accumulated, 0x1p-133 + 0x1p-149 + accumulator_subnormals};
  }
  return {0, 0};
}

struct ShapeCase {
  const char* name;
  ScanShape shape;
};

const ShapeCase kShapes[] = {
    // strided: inner > 1, the row recurrence vectorised across inner
    {"strided_len1_in64", {3, 1, 64}},
    {"strided_odd_in3", {2, 17, 3}},
    {"strided_prime_in7", {3, 31, 7}},
    {"strided_in64", {4, 101, 64}},
    {"strided_prime_in128", {2, 97, 128}},
    {"strided_in4096", {2, 13, 4096}},
    {"strided_wider_than_tile", {2, 9, 4103}},
    {"strided_one_block_in4096", {1, 64, 4096}},
    {"strided_mmrec_small", {8, 16, 64}},
    {"strided_len32768_in7", {1, 32768, 7}},
    {"strided_len32768_in64", {1, 32768, 64}},
    {"strided_blocked_in128", {2, 2048, 128}},
    // contiguous: inner == 1
    {"rows_len1", {7, 1, 1}},
    {"rows_many_short", {1000, 8, 1}},
    {"rows_many_prime", {257, 61, 1}},
    {"rows_just_above_short", {300, 65, 1}},
    {"rows_many_odd", {129, 1001, 1}},
    {"rows_few_prime", {3, 99991, 1}},
    {"row_len32768", {1, 32768, 1}},
    {"row_len2pow20", {1, 1 << 20, 1}},
    {"row_scalar", {1, 1, 1}},
};

const DType kDTypes[] = {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16};
const CpuIsa kIsas[] = {CpuIsa::kGeneric, CpuIsa::kAvx2, CpuIsa::kAvx512};

ThreadPool* pool_for(PoolMode mode) {
  // Built once: the suite, like the server, must never depend on threads started per call.
  static ThreadPool one(1);
  static ThreadPool three(3);
  switch (mode) {
    case PoolMode::kNone:
      return nullptr;
    case PoolMode::kOneWorker:
      return &one;
    case PoolMode::kThreeWorkers:
      return &three;
  }
  return nullptr;
}

using Param = std::tuple<CpuIsa, DType, int>;

// Every (ISA, dtype, case of `Cases`) combination, named "<isa>_<dtype>_<case name>".
template <const auto& Cases>
auto every_isa_dtype_and() {
  return ::testing::Combine(::testing::ValuesIn(kIsas), ::testing::ValuesIn(kDTypes),
                            ::testing::Range(0, static_cast<int>(std::size(Cases))));
}

template <const auto& Cases>
std::string case_name(const ::testing::TestParamInfo<Param>& info) {
  const auto [isa, dtype, index] = info.param;
  std::ostringstream name;
  name << cpu_isa_name(isa) << "_" << dtype_name(dtype) << "_" << Cases[index].name;
  return name.str();
}

// `misalign` elements of offset from the (64-byte aligned) buffers, for the head of the
// streaming-store path; `tuning` lowers thresholds to reach the other paths on small tensors.
// Returns the output bytes.
std::vector<unsigned char> check(CpuIsa isa, DType dtype, ScanShape shape, Values values,
                                 PoolMode pool_mode, bool in_place, const CpuTuning& tuning = {},
                                 std::int64_t misalign = 0, std::uint64_t seed = rng()()) {
  SCOPED_TRACE(::testing::Message() << "values " << static_cast<int>(values) << ", pool mode "
                                    << static_cast<int>(pool_mode) << ", in place " << in_place
                                    << ", misalign " << misalign << ", seed " << seed);

  const std::vector<unsigned char> stored = make_input(shape, dtype, values, seed);
  const std::vector<double> wide_in = widen_to_f64(stored.data(), dtype, shape.numel());
  std::vector<double> want(wide_in.size());
  reference_cumprod(wide_in.data(), want.data(), shape);

  CpuScanOptions options;
  options.isa = isa;
  options.pool = pool_for(pool_mode);
  options.max_parallelism = pool_mode == PoolMode::kThreeWorkers ? 4 : 0;
  const std::size_t skip = static_cast<std::size_t>(misalign) * element_size(dtype);
  struct Free {
    void operator()(unsigned char* data) const { std::free(data); }
  };
  auto buffer = [&] {
    const std::size_t bytes = (skip + stored.size() + 64) / 64 * 64;
    auto* data = static_cast<unsigned char*>(std::aligned_alloc(64, bytes));
    std::memset(data, 0xAB, bytes);
    return std::unique_ptr<unsigned char, Free>(data);
  };
  const auto input = buffer();
  const auto output = buffer();
  unsigned char* in = input.get() + skip;
  std::memcpy(in, stored.data(), stored.size());
  unsigned char* out = in_place ? in : output.get() + skip;
  const KernelStatus status = cpu_cumprod_tuned(in, out, shape, dtype, options, tuning);
  EXPECT_TRUE(status.ok()) << status.message();
  if (!status.ok()) return {};
  const std::vector<double> got = widen_to_f64(out, dtype, shape.numel());

  const Tolerance tol = tolerance(dtype, shape.length);
  std::int64_t failures = 0;
  for (std::size_t at = 0; at < want.size() && failures < 5; ++at) {
    bool good;
    if (std::isnan(want[at]) || std::isinf(want[at]) || want[at] == 0.0) {
      good = same_value(got[at], want[at]);  // special values must come out exactly
    } else {
      good = std::fabs(got[at] - want[at]) <= tol.relative * std::fabs(want[at]) + tol.absolute;
    }
    if (!good) {
      ++failures;
      ADD_FAILURE() << "element " << at << ": got " << got[at] << ", want " << want[at];
    }
  }

  // Single-threaded, the strided recurrence and the short-row transpose run the sequential
  // product itself, so they must match its emulation exactly, NaN payloads aside. Every other
  // path reassociates float64 products only, so a result narrower than float64 is never more
  // than one unit in its last place from the sequential one (what LibTorch's CPU cumprod and the
  // CUDA kernel compute), and special values are the same.
  const bool sequential = pool_mode == PoolMode::kNone && (shape.inner > 1 || shape.length <= 64);
  if (failures == 0 && (sequential || dtype != DType::kFloat64)) {
    const std::vector<double> exact = sequential_emulation(wide_in, shape, dtype);
    for (std::size_t at = 0; at < exact.size() && failures < 5; ++at) {
      const bool special = !std::isfinite(exact[at]) || exact[at] == 0.0;
      const bool good = sequential || special ? same_value(got[at], exact[at])
                                              : ulp_distance(got[at], exact[at], dtype) <= 1;
      if (!good) {
        ++failures;
        ADD_FAILURE() << "element " << at << ": got " << got[at] << ", sequential " << exact[at];
      }
    }
  }
  return std::vector<unsigned char>(out, out + stored.size());
}

class CpuCumprodTest : public ::testing::TestWithParam<Param> {};

// One case per (ISA, dtype, shape) keeps ctest's process count low; inside it every value class
// runs with and without pools. Large shapes rotate through the pool modes instead of running
// each, to keep the suite fast.
TEST_P(CpuCumprodTest, MatchesReference) {
  const auto [isa, dtype, shape_index] = GetParam();
  if (!cpu_isa_supported(isa)) GTEST_SKIP() << cpu_isa_name(isa) << " not supported here";
  const ScanShape shape = kShapes[shape_index].shape;
  const PoolMode pools[] = {PoolMode::kNone, PoolMode::kOneWorker, PoolMode::kThreeWorkers};
  const bool large = shape.numel() > (std::int64_t{1} << 17);
  int rotation = 0;
  for (const Values values :
       {Values::kDecay, Values::kNegative, Values::kSpecial, Values::kSubnormal}) {
    for (const bool in_place : {false, true}) {
      if (in_place && values != Values::kSpecial) continue;
      for (const PoolMode pool : pools) {
        if (large && pool != pools[rotation % 3]) continue;
        check(isa, dtype, shape, values, pool, in_place);
      }
      ++rotation;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, CpuCumprodTest, every_isa_dtype_and<kShapes>(), case_name<kShapes>);

// The paths that default thresholds reserve for large tensors, reached on small ones by lowering
// the thresholds: the chained scan (fewer sequences than threads), non-temporal stores (with
// unaligned heads), and bfloat16 with and without the AVX512-BF16 conversion.
CpuTuning tuned(std::int64_t min_thread_elements, std::int64_t streaming_min_bytes,
                bool bf16_instructions = true) {
  CpuTuning tuning;
  tuning.min_thread_elements = min_thread_elements;
  tuning.streaming_min_bytes = streaming_min_bytes;
  tuning.bf16_instructions = bf16_instructions;
  return tuning;
}

CpuTuning impatient(CpuTuning tuning) {
  tuning.chain_help_after_us = 0;
  return tuning;
}

struct TunedCase {
  const char* name;
  ScanShape shape;
  CpuTuning tuning;
  PoolMode pool;
  std::int64_t misalign;
};

const TunedCase kTunedCases[] = {
    // Chained: one row in 13 blocks on four threads; two threads; exactly two blocks (first and
    // last, so no block product at all); several rows but fewer than threads; lane tiles.
    {"chain_row", {1, 99991, 1}, tuned(1, -1), PoolMode::kThreeWorkers, 0},
    {"chain_row_two_threads", {1, 65537, 1}, tuned(1, -1), PoolMode::kOneWorker, 0},
    {"chain_two_blocks", {1, 16384, 1}, tuned(1, -1), PoolMode::kThreeWorkers, 0},
    {"chain_three_rows", {3, 30011, 1}, tuned(1, -1), PoolMode::kThreeWorkers, 0},
    {"chain_tile_in7", {1, 20011, 7}, tuned(1, -1), PoolMode::kThreeWorkers, 0},
    {"chain_tile_in64", {2, 9001, 64}, tuned(1, -1), PoolMode::kThreeWorkers, 0},
    // Chained, every late carry computed by the waiting block itself (no patience at all).
    {"chain_impatient_row", {1, 99991, 1}, impatient(tuned(1, -1)), PoolMode::kThreeWorkers, 0},
    {"chain_impatient_tile", {2, 9001, 64}, impatient(tuned(1, -1)), PoolMode::kThreeWorkers, 0},
    {"chain_impatient_rows", {3, 30011, 1}, impatient(tuned(1, 0)), PoolMode::kOneWorker, 0},
    // Streaming stores: heads of 0 to 31 elements before the first 64-byte boundary, rows shorter
    // than one line, chained blocks that start mid-line.
    {"stream_row", {1, 4099, 1}, tuned(1 << 18, 0), PoolMode::kNone, 0},
    {"stream_row_misaligned", {1, 4099, 1}, tuned(1 << 18, 0), PoolMode::kNone, 3},
    {"stream_rows", {37, 1001, 1}, tuned(1, 0), PoolMode::kOneWorker, 1},
    {"stream_short_rows", {5, 70, 1}, tuned(1 << 18, 0), PoolMode::kNone, 7},
    {"stream_chain", {1, 70001, 1}, tuned(1, 0), PoolMode::kThreeWorkers, 5},
    // Streaming tiles: vectors in registers (and bfloat16 pairs), carried through memory (wide
    // rows), tails, split tiles on threads, and unaligned rows that fall back to plain stores.
    {"stream_tile_in128", {2, 301, 128}, tuned(1 << 18, 0), PoolMode::kNone, 0},
    {"stream_tile_in320", {2, 53, 320}, tuned(1 << 18, 0), PoolMode::kNone, 0},
    {"stream_tile_in4112", {2, 9, 4112}, tuned(1, 0), PoolMode::kThreeWorkers, 0},
    {"stream_tile_unaligned", {3, 101, 64}, tuned(1 << 18, 0), PoolMode::kOneWorker, 3},
    {"stream_tile_odd_stride", {2, 77, 37}, tuned(1, 0), PoolMode::kThreeWorkers, 0},
    // The streaming threshold's boundary: 4096 elements of any dtype stream at 4096 * 2 bytes
    // (all dtypes are at least that large), none does at 4096 * 8 + 1.
    {"stream_at_threshold", {1, 4096, 1}, tuned(1 << 18, 4096 * 2), PoolMode::kNone, 2},
    {"stream_above_threshold", {1, 4096, 1}, tuned(1 << 18, 4096 * 8 + 1), PoolMode::kNone, 2},
    // bfloat16 rounded without AVX512-BF16 (the path of CPUs that lack it).
    {"exact_bf16_row", {1, 5003, 1}, tuned(1 << 18, -1, false), PoolMode::kNone, 0},
    {"exact_bf16_tile", {3, 101, 64}, tuned(1 << 18, -1, false), PoolMode::kNone, 0},
};

class CpuCumprodTunedTest : public ::testing::TestWithParam<Param> {};

TEST_P(CpuCumprodTunedTest, MatchesReference) {
  const auto [isa, dtype, index] = GetParam();
  if (!cpu_isa_supported(isa)) GTEST_SKIP() << cpu_isa_name(isa) << " not supported here";
  const TunedCase& c = kTunedCases[index];
  for (const Values values :
       {Values::kDecay, Values::kNegative, Values::kSpecial, Values::kSubnormal}) {
    for (const bool in_place : {false, true}) {
      if (in_place && values != Values::kSpecial) continue;
      check(isa, dtype, c.shape, values, c.pool, in_place, c.tuning, c.misalign);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, CpuCumprodTunedTest, every_isa_dtype_and<kTunedCases>(),
                         case_name<kTunedCases>);

// The AVX512-BF16 conversion (with its exact fallback for vectors holding subnormal results)
// must store the very bits of the exact integer rounding, NaN payloads included.
TEST(CpuCumprod, Bf16InstructionsRoundLikeExactRounding) {
  if (!cpu_isa_supported(CpuIsa::kAvx512)) GTEST_SKIP() << "avx512 not supported here";
  const ScanShape shapes[] = {{1, 10007, 1}, {2, 301, 128}, {4, 77, 32}};
  for (const ScanShape shape : shapes) {
    for (const Values values : {Values::kDecay, Values::kSpecial, Values::kSubnormal}) {
      const std::uint64_t seed = rng()();
      const std::vector<unsigned char> fast = check(CpuIsa::kAvx512, DType::kBFloat16, shape,
                                                    values, PoolMode::kNone, false, {}, 0, seed);
      const std::vector<unsigned char> exact =
          check(CpuIsa::kAvx512, DType::kBFloat16, shape, values, PoolMode::kNone, false,
                tuned(1 << 18, -1, false), 0, seed);
      EXPECT_TRUE(fast == exact) << "shape " << shape.outer << "x" << shape.length << "x"
                                 << shape.inner << ", values " << static_cast<int>(values)
                                 << ", seed " << seed;
    }
  }
}

// Whether a late carry was waited for or computed by the waiting block must not change a bit.
TEST(CpuCumprod, ChainedScanIsDeterministic) {
  const ScanShape shapes[] = {{1, 99991, 1}, {2, 9001, 64}};
  for (const ScanShape shape : shapes) {
    for (const DType dtype : kDTypes) {
      const std::uint64_t seed = rng()();
      const std::vector<unsigned char> patient =
          check(CpuIsa::kAuto, dtype, shape, Values::kNegative, PoolMode::kThreeWorkers, false,
                tuned(1, -1), 0, seed);
      for (int round = 0; round < 3; ++round) {
        const std::vector<unsigned char> eager =
            check(CpuIsa::kAuto, dtype, shape, Values::kNegative, PoolMode::kThreeWorkers, false,
                  impatient(tuned(1, -1)), 0, seed);
        EXPECT_TRUE(patient == eager) << dtype_name(dtype) << ", seed " << seed;
      }
    }
  }
}

TEST(CpuCumprod, EmptyTensorsAreNoOps) {
  for (const ScanShape shape : {ScanShape{0, 5, 3}, ScanShape{2, 0, 3}, ScanShape{2, 5, 0}}) {
    for (const DType dtype : kDTypes) {
      EXPECT_TRUE(cpu_cumprod(nullptr, nullptr, shape, dtype).ok());
    }
  }
}

TEST(CpuCumprod, RejectsBadArguments) {
  float data[4] = {1, 2, 3, 4};
  EXPECT_EQ(cpu_cumprod(data, data, {1, -1, 4}, DType::kFloat32).code(),
            KernelStatus::Code::kInvalidArgument);
  EXPECT_EQ(cpu_cumprod(nullptr, data, {1, 1, 4}, DType::kFloat32).code(),
            KernelStatus::Code::kInvalidArgument);
  EXPECT_EQ(
      cpu_cumprod(data, data, {std::int64_t{1} << 40, std::int64_t{1} << 40, 4}, DType::kFloat32)
          .code(),
      KernelStatus::Code::kInvalidArgument);
}

TEST(CpuCumprod, ReportsIsas) {
  EXPECT_TRUE(cpu_isa_supported(CpuIsa::kGeneric));
  EXPECT_TRUE(cpu_isa_supported(cpu_best_isa()));
  for (const CpuIsa isa : kIsas) {
    if (cpu_isa_supported(isa)) continue;
    float data[1] = {0.5f};
    CpuScanOptions options;
    options.isa = isa;
    EXPECT_EQ(cpu_cumprod(data, data, {1, 1, 1}, DType::kFloat32, options).code(),
              KernelStatus::Code::kUnsupported);
  }
}

// Decays in (0.5, 1): float products of these stick at the smallest subnormal instead of reaching
// zero (x * 0.75 rounds back up to it), the pattern that makes subnormal flushing worth having.
// A few subnormal factors test that such inputs read as zero.
std::vector<unsigned char> make_underflowing_input(ScanShape shape, DType dtype,
                                                   std::uint64_t seed) {
  std::mt19937_64 engine(seed);
  std::uniform_real_distribution<double> decay(0.5, 1.0);
  std::vector<double> wide(static_cast<std::size_t>(shape.numel()));
  for (double& value : wide) value = decay(engine);
  const double subnormal = dtype == DType::kFloat64 ? 0x1p-1060 : 0x1p-130;
  std::uniform_int_distribution<std::size_t> where(0, wide.size() - 1);
  for (int count = 0; count < 3; ++count) wide[where(engine)] = subnormal;
  std::vector<unsigned char> stored(wide.size() * element_size(dtype));
  narrow_from_f64(wide.data(), shape.numel(), dtype, stored.data());
  return stored;
}

struct FlushCase {
  const char* name;
  ScanShape shape;
  PoolMode pool;
};

// Long enough that float64 products leave the normal range too (about 2400 factors).
const FlushCase kFlushCases[] = {
    {"strided", {2, 4099, 19}, PoolMode::kNone},
    {"strided_pool", {3, 4099, 64}, PoolMode::kThreeWorkers},
    {"rows", {5, 4099, 1}, PoolMode::kOneWorker},
    {"short_rows", {300, 61, 1}, PoolMode::kNone},
    {"chained_row", {1, 70001, 1}, PoolMode::kThreeWorkers},
};

class CpuCumprodFlushTest : public ::testing::TestWithParam<Param> {};

// With flushing, results whose exact value is below half the accumulator's smallest normal number
// are exactly zero, none is subnormal (except float16's own, which lie far above float32's normal
// range and must survive), and everything well above that range is as accurate as without it.
TEST_P(CpuCumprodFlushTest, ZeroBelowNormalRangeExactAbove) {
  const auto [isa, dtype, index] = GetParam();
  if (!cpu_isa_supported(isa)) GTEST_SKIP() << cpu_isa_name(isa) << " not supported here";
  if (!subnormal_flush_supported()) GTEST_SKIP() << "no flush-to-zero on this architecture";
  const FlushCase& c = kFlushCases[index];
  const std::uint64_t seed = rng()();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const std::vector<unsigned char> stored = make_underflowing_input(c.shape, dtype, seed);
  const std::vector<double> wide_in = widen_to_f64(stored.data(), dtype, c.shape.numel());
  std::vector<double> want(wide_in.size());
  reference_cumprod(wide_in.data(), want.data(), c.shape);

  CpuScanOptions options;
  options.isa = isa;
  options.pool = pool_for(c.pool);
  options.flush_subnormals = true;
  std::vector<unsigned char> out(stored.size());
  const KernelStatus status =
      cpu_cumprod_tuned(stored.data(), out.data(), c.shape, dtype, options, tuned(1, -1));
  ASSERT_TRUE(status.ok()) << status.message();
  const std::vector<double> got = widen_to_f64(out.data(), dtype, c.shape.numel());

  const double normal_min = dtype == DType::kFloat64 ? DBL_MIN : FLT_MIN;
  const Tolerance tol = tolerance(dtype, c.shape.length);
  std::int64_t zeros = 0;
  std::int64_t failures = 0;
  for (std::size_t at = 0; at < want.size() && failures < 5; ++at) {
    bool good;
    if (std::fabs(want[at]) < normal_min / 2) {
      good = got[at] == 0.0;
      zeros += good;
    } else if (std::fabs(want[at]) < 2 * normal_min) {
      good = std::fabs(got[at] - want[at]) <= 2 * normal_min;
    } else {
      good = std::fabs(got[at] - want[at]) <= tol.relative * std::fabs(want[at]) + tol.absolute;
    }
    if (dtype != DType::kFloat16 && got[at] != 0.0 && std::fabs(got[at]) < normal_min) {
      good = false;
    }
    if (!good) {
      ++failures;
      ADD_FAILURE() << "element " << at << ": got " << got[at] << ", want " << want[at];
    }
  }
  EXPECT_GT(zeros, 0) << "the inputs never left the normal range: the test tests nothing";
}

INSTANTIATE_TEST_SUITE_P(All, CpuCumprodFlushTest, every_isa_dtype_and<kFlushCases>(),
                         case_name<kFlushCases>);

// The floating-point mode is per thread and the pool's workers outlive a call: a flushing call
// must leave neither its caller nor the workers flushing, or the next exact call on the same pool
// would silently lose its subnormals.
TEST(CpuCumprod, FlushingLeavesCallerAndWorkersExact) {
  ThreadPool pool(3);
  // 0.75^310 is about 1.7e-39: a normal float64 accumulator, a subnormal float32 result, which
  // a flushing call returns as 0 and an exact one must return on every thread.
  const ScanShape shape{8, 310, 64};
  std::vector<float> decays(static_cast<std::size_t>(shape.numel()), 0.75f);
  std::vector<float> out(decays.size());
  CpuScanOptions options;
  options.pool = &pool;
  options.flush_subnormals = true;
  const CpuTuning every_thread = tuned(1, -1);
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE(
        cpu_cumprod_tuned(decays.data(), out.data(), shape, DType::kFloat32, options, every_thread)
            .ok());
    if (subnormal_flush_supported()) {
      EXPECT_EQ(out.back(), 0.0f);
    }
  }

  volatile float smallest_normal = FLT_MIN;
  EXPECT_NE(smallest_normal * 0.5f, 0.0f) << "the caller thread was left flushing";

  double sequential64 = 1.0;
  for (std::int64_t step = 0; step < shape.length; ++step) sequential64 *= 0.75;
  const float sequential = static_cast<float>(sequential64);
  ASSERT_EQ(std::fpclassify(sequential), FP_SUBNORMAL);
  options.flush_subnormals = false;
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE(
        cpu_cumprod_tuned(decays.data(), out.data(), shape, DType::kFloat32, options, every_thread)
            .ok());
    for (std::int64_t block = 0; block < shape.outer; ++block) {
      for (std::int64_t lane = 0; lane < shape.inner; ++lane) {
        const std::size_t last =
            static_cast<std::size_t>(((block + 1) * shape.length - 1) * shape.inner + lane);
        ASSERT_EQ(out[last], sequential) << "block " << block << ", lane " << lane;
      }
    }
  }
}

// Flushing is of results only: a subnormal input is multiplied exactly, so the documented bound
// holds (a result is exact, or 0 where the exact product is below the smallest normal), and
// inf * subnormal stays inf. These were 0, 0, NaN and 0 while the guard also set DAZ.
TEST(CpuCumprod, FlushingReadsSubnormalInputsExactly) {
  if (!subnormal_flush_supported()) GTEST_SKIP() << "no flush-to-zero on this architecture";
  CpuScanOptions options;
  options.flush_subnormals = true;
  const auto scan_f32 = [&](std::vector<float> in) {
    std::vector<float> out(in.size(), -1.0f);
    const ScanShape shape{1, static_cast<std::int64_t>(in.size()), 1};
    EXPECT_TRUE(cpu_cumprod(in.data(), out.data(), shape, DType::kFloat32, options).ok());
    return out;
  };
  const float tiny = 1e-40f, tinier = 1e-44f;  // both subnormal in float32
  ASSERT_EQ(std::fpclassify(tiny), FP_SUBNORMAL);
  EXPECT_FLOAT_EQ(scan_f32({1e30f, tiny})[1], static_cast<float>(1e30 * double{tiny}));
  EXPECT_FLOAT_EQ(scan_f32({3e38f, tinier})[1], static_cast<float>(3e38 * double{tinier}));
  EXPECT_EQ(scan_f32({INFINITY, tiny})[1], INFINITY);
  // Below the normal range the result is flushed: 1e-30 * 1e-10 = 1e-40.
  EXPECT_EQ(scan_f32({1e-30f, 1e-10f})[1], 0.0f);
  std::vector<double> in64 = {1e300, 1e-310}, out64(2, -1.0);
  ASSERT_EQ(std::fpclassify(in64[1]), FP_SUBNORMAL);
  EXPECT_TRUE(cpu_cumprod(in64.data(), out64.data(), {1, 2, 1}, DType::kFloat64, options).ok());
  EXPECT_DOUBLE_EQ(out64[1], 1e300 * 1e-310);
}

// The accumulator is float64 for float32 too, as in LibTorch's CPU cumprod and the CUDA kernel:
// a running product beyond float32's range is not inf until it is stored, so a later factor can
// bring it back, and inf * 0 (NaN) never happens where the exact product is 0.
TEST(CpuCumprod, Float32AccumulatesBeyondItsRange) {
  for (const CpuIsa isa : kIsas) {
    if (!cpu_isa_supported(isa)) continue;
    SCOPED_TRACE(cpu_isa_name(isa));
    CpuScanOptions options;
    options.isa = isa;
    const auto scan = [&](std::vector<float> in) {
      std::vector<float> out(in.size(), -1.0f);
      const ScanShape shape{1, static_cast<std::int64_t>(in.size()), 1};
      EXPECT_TRUE(cpu_cumprod(in.data(), out.data(), shape, DType::kFloat32, options).ok());
      return out;
    };
    EXPECT_EQ(scan({3e38f, 2.0f, 0.5f}), (std::vector<float>{3e38f, INFINITY, 3e38f}));
    EXPECT_EQ(scan({3e38f, 2.0f, 0.0f}), (std::vector<float>{3e38f, INFINITY, 0.0f}));
    // 1e-60 is 0 in float32 but not in the accumulator, which the next factors bring back.
    const double small = 1e-30f, large = 1e30f;
    EXPECT_EQ(scan({1e-30f, 1e-30f, 1e30f, 1e30f}),
              (std::vector<float>{1e-30f, 0.0f, static_cast<float>(small * small * large),
                                  static_cast<float>(small * small * large * large)}));
  }
}

// float64 has no wider accumulator, so its contiguous rows re-anchor their running product every
// 32 vectors on a compensated product of the same elements (cumprod_body.h): a result's error is
// then that of at most 32 vectors of the plain in-register scan (log2(lanes) + 1 roundings of
// 2^-53 each, at most 8 lanes), plus its own prefix and product, against the double-double
// reference, however long the row, where a sequential float64 loop (torch.cumprod) drifts by a
// random walk of up to `length` roundings. A chained row rounds its carry once per block, so it may
// drift by a couple of units more per block (blocks are at least 8192 elements).
TEST(CpuCumprod, Float64RowsStayAnchored) {
  struct RowCase {
    const char* name;
    ScanShape shape;
    CpuTuning tuning;
    PoolMode pool;
    bool chained;
  };
  const RowCase cases[] = {
      // Long enough that the plain scan's walk alone would pass the bound in nearly every run.
      {"one piece", {2, (1 << 19) + 7, 1}, {}, PoolMode::kNone, false},
      {"one piece, streaming stores",
       {1, (1 << 19) + 1, 1},
       tuned(1 << 30, 0),
       PoolMode::kNone,
       false},
      {"chained", {1, 1 << 20, 1}, tuned(1, -1), PoolMode::kThreeWorkers, true},
      {"chained, streaming stores", {1, 99991, 1}, tuned(1, 0), PoolMode::kOneWorker, true},
  };
  for (const CpuIsa isa : kIsas) {
    if (!cpu_isa_supported(isa)) continue;
    for (const RowCase& c : cases) {
      const std::uint64_t seed = rng()();
      SCOPED_TRACE(::testing::Message()
                   << cpu_isa_name(isa) << ", " << c.name << ", seed " << seed);
      std::mt19937_64 engine(seed);
      std::uniform_real_distribution<double> decay(1.0 - 8.0 / static_cast<double>(c.shape.length),
                                                   1.0);
      std::vector<double> in(static_cast<std::size_t>(c.shape.numel()));
      for (double& value : in) value = decay(engine);
      std::vector<double> want(in.size());
      reference_cumprod_double_double(in.data(), want.data(), c.shape);
      std::vector<double> out(in.size());
      CpuScanOptions options;
      options.isa = isa;
      options.pool = pool_for(c.pool);
      ASSERT_TRUE(
          cpu_cumprod_tuned(in.data(), out.data(), c.shape, DType::kFloat64, options, c.tuning)
              .ok());
      const double blocks = static_cast<double>(c.shape.length / 8192 + 1);
      const double roundings = 32 * 4 + 8 + (c.chained ? 2 * blocks : 0);
      double worst = 0;
      for (std::size_t at = 0; at < out.size(); ++at) {
        worst = std::max(worst, std::fabs(out[at] - want[at]) / std::fabs(want[at]));
      }
      EXPECT_LE(worst, roundings * 0x1p-53);
    }
  }
}

// Where the anchoring cannot apply (a product is 0, infinite or NaN, or overflows or underflows in
// the lane-wise order of the compensated product; the baseline build's error term passes its
// range), a float64 row gives what the sequential product gives.
TEST(CpuCumprod, Float64RowsKeepSpecialValuesOfThePlainProduct) {
  const double huge = 1e300, tiny = 1e-300;
  const std::vector<std::vector<double>> rows = {
      {huge, 1e10, 0.5, 2.0},         // overflow, then stays infinite
      {DBL_MAX, 1.0 + 0x1p-52, 0.5},  // the exact product rounds up to inf
      {huge, 1e10, 0.0, 3.0},         // inf * 0 is NaN
      {tiny, 1e-10, 2.0, 3.0},        // underflow to 0 (flushed or not), then stays 0
      {-2.0, 0.0, -1.0, INFINITY},    // signed zero, then 0 * inf
      {huge, tiny, huge, tiny, huge, tiny, huge, tiny, huge, tiny, 0.5},
  };
  for (const CpuIsa isa : kIsas) {
    if (!cpu_isa_supported(isa)) continue;
    for (const bool flush : {false, true}) {
      for (const auto& row : rows) {
        // Long enough for whole vectors of every build: the row repeated, with ones between.
        std::vector<double> in;
        for (int copy = 0; copy < 5; ++copy) {
          in.insert(in.end(), row.begin(), row.end());
          in.push_back(1.0);
        }
        const ScanShape shape{1, static_cast<std::int64_t>(in.size()), 1};
        std::vector<double> want(in.size());
        {
          const ScopedFlushSubnormals same_mode(flush);  // results below DBL_MIN are then 0
          reference_cumprod(in.data(), want.data(), shape);
        }
        std::vector<double> out(in.size());
        CpuScanOptions options;
        options.isa = isa;
        options.flush_subnormals = flush;
        ASSERT_TRUE(cpu_cumprod(in.data(), out.data(), shape, DType::kFloat64, options).ok());
        for (std::size_t at = 0; at < in.size(); ++at) {
          if (std::isfinite(want[at]) && want[at] != 0) {
            EXPECT_LE(ulp_distance(out[at], want[at], DType::kFloat64), 2)
                << cpu_isa_name(isa) << " element " << at;
          } else {
            EXPECT_TRUE(same_value(out[at], want[at]))
                << cpu_isa_name(isa) << " element " << at << ": got " << out[at] << ", want "
                << want[at];
          }
        }
      }
    }
  }
}

TEST(FloatEnv, FlushesInsideTheScopeOnly) {
  if (!subnormal_flush_supported()) GTEST_SKIP() << "no flush-to-zero on this architecture";
  volatile float smallest_normal = FLT_MIN;
  volatile float subnormal = 0x1p-140f;
  {
    const ScopedFlushSubnormals flush(true);
    EXPECT_EQ(smallest_normal * 0.5f, 0.0f);
    EXPECT_EQ(subnormal * 2.0f, 0.0f) << "a subnormal result is flushed";
    EXPECT_EQ(subnormal * 0x1p30f, 0x1p-110f) << "a subnormal operand is read exactly (no DAZ)";
    {
      const ScopedFlushSubnormals nested(true);
      const ScopedFlushSubnormals disabled(false);
      EXPECT_EQ(smallest_normal * 0.5f, 0.0f);
    }
    EXPECT_EQ(smallest_normal * 0.5f, 0.0f) << "a nested guard ended the outer one's mode";
  }
  EXPECT_EQ(smallest_normal * 0.5f, 0x1p-127f);
  EXPECT_EQ(subnormal * 2.0f, 0x1p-139f);
}

// Several requests at once on one pool, each bounded to two threads: results stay right (and
// under TSan, race-free).
TEST(CpuCumprod, ConcurrentRequestsShareOnePool) {
  ThreadPool pool(2);
  const ScanShape shapes[] = {{2, 4096, 64}, {1, 1 << 18, 1}, {1, 8192, 128}, {512, 40, 1}};
  std::vector<std::thread> callers;
  std::vector<int> failures(8, 0);
  for (int caller = 0; caller < 8; ++caller) {
    callers.emplace_back([&, caller] {
      const ScanShape shape = shapes[caller % 4];
      const DType dtype = caller % 2 ? DType::kBFloat16 : DType::kFloat32;
      std::vector<unsigned char> data = make_input(shape, dtype, Values::kDecay, 1000 + caller);
      const std::vector<double> wide = widen_to_f64(data.data(), dtype, shape.numel());
      std::vector<double> want(wide.size());
      reference_cumprod(wide.data(), want.data(), shape);
      CpuScanOptions options;
      options.pool = &pool;
      options.max_parallelism = 2;
      for (int round = 0; round < 3; ++round) {
        std::vector<unsigned char> out(data.size());
        if (!cpu_cumprod(data.data(), out.data(), shape, dtype, options).ok()) ++failures[caller];
        const std::vector<double> got = widen_to_f64(out.data(), dtype, shape.numel());
        const Tolerance tol = tolerance(dtype, shape.length);
        for (std::size_t at = 0; at < got.size(); ++at) {
          if (std::fabs(got[at] - want[at]) > tol.relative * std::fabs(want[at]) + tol.absolute) {
            ++failures[caller];
            break;
          }
        }
      }
    });
  }
  for (std::thread& caller : callers) caller.join();
  for (int caller = 0; caller < 8; ++caller) EXPECT_EQ(failures[caller], 0) << "caller " << caller;
}

}  // namespace
}  // namespace scan::kernels

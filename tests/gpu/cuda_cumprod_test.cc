// Correctness of the CUDA cumprod kernels against the sequential float64 reference. Every case
// draws fresh inputs, poisons the output first and checks every element. Tests that need a device
// skip where there is none (CI builds with nvcc but has no GPU); pure argument checks run anywhere.
#include "scan/kernels/cuda_cumprod.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "scan/kernels/half.h"
#include "scan/kernels/reference.h"

namespace scan::kernels {
namespace {

#define SCAN_REQUIRE_GPU()                                                    \
  do {                                                                        \
    if (!cuda_device_available()) {                                           \
      GTEST_SKIP() << "no usable CUDA device: " << cuda_device_description(); \
    }                                                                         \
  } while (false)

#define SCAN_CUDA_OK(call) ASSERT_EQ((call), cudaSuccess) << #call

const DType kAllDTypes[] = {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16};

// splitmix64: fast enough to draw the 64M-element production shape in well under a second, and
// seeded from the clock so every run checks new inputs (the seed is printed on failure).
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double between(double low, double high) { return low + (high - low) * uniform(); }

 private:
  std::uint64_t state_;
};

std::uint64_t fresh_seed() {
  return static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
}

enum class Inputs {
  kDecayHalf,     // uniform in (0.5, 1): every factor matters, products underflow after ~300 rows
  kDecayNearOne,  // uniform in (0.9999, 1): products stay normal over 1M rows, long-range check
  kPowersOfTwo,   // +-2^e, running exponent kept in [-7, 7]: every product is exact in every dtype
  kSpecial,       // near-one magnitudes, random signs, with 0, -0, NaN, +Inf, -Inf sprinkled in
};

const char* inputs_name(Inputs inputs) {
  switch (inputs) {
    case Inputs::kDecayHalf:
      return "decay(0.5,1)";
    case Inputs::kDecayNearOne:
      return "decay(0.9999,1)";
    case Inputs::kPowersOfTwo:
      return "powers-of-two";
    case Inputs::kSpecial:
      return "special-values";
  }
  return "?";
}

// Values in memory order, element (o, l, i) at (o * length + l) * inner + i.
std::vector<double> draw(ScanShape shape, Inputs inputs, Rng& rng) {
  std::vector<double> values(static_cast<std::size_t>(shape.numel()));
  std::vector<int> exponent(static_cast<std::size_t>(shape.inner));
  std::size_t at = 0;
  for (std::int64_t o = 0; o < shape.outer; ++o) {
    std::fill(exponent.begin(), exponent.end(), 0);
    for (std::int64_t l = 0; l < shape.length; ++l) {
      for (std::int64_t i = 0; i < shape.inner; ++i, ++at) {
        switch (inputs) {
          case Inputs::kDecayHalf:
            values[at] = rng.between(0.5, 1.0);
            break;
          case Inputs::kDecayNearOne:
            values[at] = rng.between(0.9999, 1.0);
            break;
          case Inputs::kPowersOfTwo: {
            // A bounded walk of the running exponent keeps every sub-product, in whatever order
            // the kernel groups them, inside [2^-14, 2^14]: no rounding anywhere, exact equality.
            int& e = exponent[static_cast<std::size_t>(i)];
            const int step = static_cast<int>(rng.next() % 3) - 1;
            const int taken = (e + step < -7 || e + step > 7) ? 0 : step;
            e += taken;
            values[at] = std::ldexp((rng.next() & 3) == 0 ? -1.0 : 1.0, taken);
            break;
          }
          case Inputs::kSpecial: {
            const double magnitude = rng.between(0.9999, 1.0);
            values[at] = (rng.next() & 1) ? -magnitude : magnitude;
            const std::uint64_t pick = rng.next() % 4096;
            if (pick < 5) {
              const double specials[] = {0.0, -0.0, std::nan(""), HUGE_VAL, -HUGE_VAL};
              values[at] = specials[pick];
            }
            break;
          }
        }
      }
    }
  }
  return values;
}

double element_at(const unsigned char* bytes, DType dtype, std::int64_t index) {
  const unsigned char* element = bytes + index * static_cast<std::int64_t>(element_size(dtype));
  switch (dtype) {
    case DType::kFloat64: {
      double value;
      std::memcpy(&value, element, sizeof value);
      return value;
    }
    case DType::kFloat32: {
      float value;
      std::memcpy(&value, element, sizeof value);
      return value;
    }
    case DType::kFloat16:
    case DType::kBFloat16: {
      std::uint16_t stored;
      std::memcpy(&stored, element, sizeof stored);
      return dtype == DType::kFloat16 ? float16_to_float(stored) : bfloat16_to_float(stored);
    }
  }
  return std::nan("");
}

struct Tolerance {
  double relative;
  double absolute;
};

// |ours - ref| <= relative * |ref| + absolute, against the exact product of the stored inputs.
//  - Accumulation: every factor costs one rounding of the accumulator, unit roundoff u = 2^-53 for
//    float64 and float32 (whose aggregates and prefixes the kernel keeps in float64) and 2^-24 for
//    float16 and bfloat16 (float32, as torch). The kernel groups the factors differently from a
//    sequential loop, so the bound worth stating is the statistical one: L unbiased roundings make
//    a random walk of relative size ~u*sqrt(L/3), and 8*u*sqrt(L) sits above the largest of
//    millions of such walks. (A biased rounding, as float32 accumulation of blocked products near 1
//    has, grows like L instead and fails this; the benchmark also compares our error with
//    torch.cumprod's.)
//  - Storage: float16 and bfloat16 round the accumulated product once more, by at most half a unit
//    in the last place: 2^-11 and 2^-8 relative. float32 outputs come from a float64 pass
//    (contiguous scans: one rounding) or a float32 pass over at most 16 of a thread's elements
//    restarted from a float64 prefix (strided: at most 17 roundings of 2^-24), whatever the
//    length.
//  - Subnormals: below the smallest normal number precision is absolute, not relative, so
//    differences under it (FLT_MIN for float32/bfloat16, one float16 subnormal step 2^-24, DBL_MIN
//    for float64) are rounding, not error.
Tolerance tolerance_for(DType dtype, std::int64_t length) {
  const double roots = std::sqrt(static_cast<double>(length));
  switch (dtype) {
    case DType::kFloat64:
      return {0x1.0p-53 + 8 * 0x1.0p-53 * roots, DBL_MIN};
    case DType::kFloat32:
      return {17 * 0x1.0p-24 + 8 * 0x1.0p-53 * roots, FLT_MIN};
    case DType::kFloat16:
      return {0x1.0p-11 + 8 * 0x1.0p-24 * roots, 0x1.0p-24};
    case DType::kBFloat16:
      return {0x1.0p-8 + 8 * 0x1.0p-24 * roots, FLT_MIN};
  }
  return {0, 0};
}

std::string describe(DType dtype, ScanShape shape, Inputs inputs, std::uint64_t seed) {
  std::ostringstream text;
  text << dtype_name(dtype) << " [" << shape.outer << ", " << shape.length << ", " << shape.inner
       << "] " << inputs_name(inputs) << " seed=" << seed;
  return text.str();
}

// Every element: NaN exactly where the reference is NaN, infinities equal, the sign of every other
// value (zeros included) equal, magnitudes within tolerance (or bit-equal where `exact`).
::testing::AssertionResult matches_reference(const std::vector<double>& reference,
                                             const unsigned char* ours, DType dtype,
                                             ScanShape shape, bool exact) {
  const Tolerance tolerance = tolerance_for(dtype, shape.length);
  std::int64_t failures = 0;
  std::ostringstream first;
  for (std::int64_t index = 0; index < shape.numel(); ++index) {
    const double want = reference[static_cast<std::size_t>(index)];
    const double got = element_at(ours, dtype, index);
    bool ok;
    if (std::isnan(want) || std::isnan(got)) {
      ok = std::isnan(want) && std::isnan(got);
    } else if (std::isinf(want) || exact) {
      ok = got == want && std::signbit(got) == std::signbit(want);
    } else {
      ok = std::signbit(got) == std::signbit(want) &&
           std::fabs(got - want) <= tolerance.relative * std::fabs(want) + tolerance.absolute;
    }
    if (!ok && failures++ < 5) {
      const std::int64_t inner = index % shape.inner;
      const std::int64_t row = (index / shape.inner) % shape.length;
      const std::int64_t outer = index / (shape.inner * shape.length);
      first << "\n  at (" << outer << ", " << row << ", " << inner << "): got " << got << ", want "
            << want;
    }
  }
  if (failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << failures << " of " << shape.numel() << " elements wrong (rtol " << tolerance.relative
         << ", atol " << tolerance.absolute << ")" << first.str();
}

class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t bytes) {
    if (cudaMalloc(&data_, bytes == 0 ? 1 : bytes) != cudaSuccess) data_ = nullptr;
  }
  ~DeviceBuffer() { cudaFree(data_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  unsigned char* get() const { return static_cast<unsigned char*>(data_); }

 private:
  void* data_ = nullptr;
};

struct RunOptions {
  bool in_place = false;
  std::size_t offset_elements = 0;  // misaligns both pointers to force the scalar paths
  unsigned char poison = 0xff;      // NaN in every dtype: an unwritten element cannot pass
  cudaStream_t stream = nullptr;
};

// Copies `input` to the device, runs the kernel, and returns the output bytes.
void run_on_device(const std::vector<unsigned char>& input, DType dtype, ScanShape shape,
                   const RunOptions& options, std::vector<unsigned char>* output) {
  const std::size_t bytes = input.size();
  const std::size_t offset = options.offset_elements * element_size(dtype);
  DeviceBuffer in_buffer(bytes + offset);
  DeviceBuffer out_buffer(options.in_place ? 0 : bytes + offset);
  ASSERT_NE(in_buffer.get(), nullptr);
  ASSERT_NE(out_buffer.get(), nullptr);
  unsigned char* in = in_buffer.get() + offset;
  unsigned char* out = options.in_place ? in : out_buffer.get() + offset;
  SCAN_CUDA_OK(cudaMemcpy(in, input.data(), bytes, cudaMemcpyHostToDevice));
  if (!options.in_place) {
    SCAN_CUDA_OK(cudaMemset(out, options.poison, bytes));
  }

  const KernelStatus status = cuda_cumprod(in, out, shape, dtype, options.stream);
  ASSERT_TRUE(status.ok()) << status.message();
  SCAN_CUDA_OK(cudaDeviceSynchronize());
  output->resize(bytes);
  SCAN_CUDA_OK(cudaMemcpy(output->data(), out, bytes, cudaMemcpyDeviceToHost));
}

// Draws inputs, runs the kernel and checks it; `what` names the case in failures.
void check_case(DType dtype, ScanShape shape, Inputs inputs, RunOptions options = {}) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE(describe(dtype, shape, inputs, seed));
  Rng rng(seed);
  const std::vector<double> drawn = draw(shape, inputs, rng);
  std::vector<unsigned char> stored(static_cast<std::size_t>(shape.numel()) * element_size(dtype));
  narrow_from_f64(drawn.data(), shape.numel(), dtype, stored.data());
  // The yardstick multiplies exactly the values the kernel sees, after rounding to the dtype.
  const std::vector<double> widened = widen_to_f64(stored.data(), dtype, shape.numel());
  std::vector<double> reference(widened.size());
  reference_cumprod(widened.data(), reference.data(), shape);

  if (inputs == Inputs::kSpecial) options.poison = 0x55;  // finite, and no product of |x| <= 1
  std::vector<unsigned char> output;
  ASSERT_NO_FATAL_FAILURE(run_on_device(stored, dtype, shape, options, &output));
  EXPECT_TRUE(
      matches_reference(reference, output.data(), dtype, shape, inputs == Inputs::kPowersOfTwo));
}

// Powers of two whose running exponent is pinned to +7 at the end of every even period (counted
// from 0) and to -7 at the end of every odd one, with a bounded random walk in between (signs
// random throughout): each period multiplies by 2^+14 or 2^-14, alternately, and every contiguous
// sub-product stays within 2^+-14, so the scan is exact in every dtype. With the period equal to
// a look-back tile, the tiles at even distances before any tile all have aggregates of the same
// sign of exponent: a fold that multiplies tiles which are not adjacent (non-contiguous partial
// products) leaves float32 (2^128) after ten of them, where one contiguous run never does.
std::vector<double> draw_pinned_powers(ScanShape shape, std::int64_t period, Rng& rng) {
  std::vector<double> values(static_cast<std::size_t>(shape.numel()));
  std::size_t at = 0;
  for (std::int64_t o = 0; o < shape.outer; ++o) {
    int e = 0;
    for (std::int64_t l = 0; l < shape.length; ++l) {
      const int target = (l / period) % 2 == 0 ? 7 : -7;
      int step;
      if (l % period >= period - 15) {
        step = e < target ? 1 : (e > target ? -1 : 0);  // 15 steps reach the target from anywhere
      } else {
        step = static_cast<int>(rng.next() % 3) - 1;
        if (e + step < -7 || e + step > 7) step = 0;
      }
      e += step;
      const double sign = (rng.next() & 3) == 0 ? -1.0 : 1.0;
      for (std::int64_t i = 0; i < shape.inner; ++i, ++at) values[at] = std::ldexp(sign, step);
    }
  }
  return values;
}

void check_pinned_powers(DType dtype, ScanShape shape, std::int64_t period) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE(describe(dtype, shape, Inputs::kPowersOfTwo, seed) + " pinned every " +
               std::to_string(period));
  Rng rng(seed);
  const std::vector<double> drawn = draw_pinned_powers(shape, period, rng);
  std::vector<unsigned char> stored(static_cast<std::size_t>(shape.numel()) * element_size(dtype));
  narrow_from_f64(drawn.data(), shape.numel(), dtype, stored.data());
  std::vector<double> reference(drawn.size());
  reference_cumprod(drawn.data(), reference.data(), shape);  // +-2^e: exact in every dtype
  std::vector<unsigned char> output;
  ASSERT_NO_FATAL_FAILURE(run_on_device(stored, dtype, shape, RunOptions{}, &output));
  EXPECT_TRUE(matches_reference(reference, output.data(), dtype, shape, true));
}

void check_all_inputs(DType dtype, ScanShape shape, RunOptions options = {}) {
  for (Inputs inputs : {Inputs::kDecayHalf, Inputs::kDecayNearOne, Inputs::kPowersOfTwo}) {
    check_case(dtype, shape, inputs, options);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

// ---- Shapes, one test per dtype and inner extent ----------------------------------------------

struct ShapeSuite {
  DType dtype;
  std::int64_t inner;
};

std::string suite_name(const ::testing::TestParamInfo<ShapeSuite>& info) {
  return std::string(dtype_name(info.param.dtype)) + "_inner" + std::to_string(info.param.inner);
}

// (outer, length) pairs per inner extent: the lengths the issue names (1, 2, 31, 32, 33, primes,
// powers of two, 32768, 1<<20), sized so that the whole suite stays a few seconds of CPU reference.
std::vector<std::pair<std::int64_t, std::int64_t>> lengths_for(std::int64_t inner) {
  switch (inner) {
    case 1:  // one long row, odd rows (scalar path), many short rows, look-back across tiles,
             // rows of a few tiles walked by one block each (rows enough to fill any GPU), and
             // one row of 512+ tiles (look-back windows beyond the first)
      return {{1, 1},      {3, 2},        {2, 31},      {1, 32},
              {3, 33},     {2, 127},      {5, 4099},    {2, 8192},
              {1, 32768},  {3, 32768},    {512, 4096},  {1, 1 << 20},
              {1, 100003}, {1200, 20000}, {600, 20001}, {1, (1 << 22) + 3}};
    case 3:
      return {{2, 1}, {2, 2}, {2, 31}, {2, 32}, {2, 33}, {2, 127}, {2, 1031}, {2, 32768}};
    case 64:
      return {{2, 1},   {2, 2},    {2, 31},   {2, 32},   {2, 33},
              {2, 127}, {2, 1024}, {2, 4099}, {1, 32768}};
    case 128:
      return {{3, 1}, {3, 31}, {3, 33}, {3, 257}, {2, 4096}, {1, 32768}};
    default:  // 4096
      return {{1, 1}, {2, 2}, {1, 33}, {1, 1024}};
  }
}

class CudaCumprodShapes : public ::testing::TestWithParam<ShapeSuite> {};

TEST_P(CudaCumprodShapes, MatchesFloat64Reference) {
  SCAN_REQUIRE_GPU();
  for (const auto& [outer, length] : lengths_for(GetParam().inner)) {
    check_all_inputs(GetParam().dtype, ScanShape{outer, length, GetParam().inner});
    if (HasFatalFailure()) return;
  }
}

std::vector<ShapeSuite> all_shape_suites() {
  std::vector<ShapeSuite> suites;
  for (DType dtype : kAllDTypes) {
    for (std::int64_t inner : {1, 3, 64, 128, 4096}) suites.push_back({dtype, inner});
  }
  return suites;
}

INSTANTIATE_TEST_SUITE_P(AllDTypes, CudaCumprodShapes, ::testing::ValuesIn(all_shape_suites()),
                         suite_name);

// ---- Per-dtype behaviour ----------------------------------------------------------------------

class CudaCumprodDType : public ::testing::TestWithParam<DType> {};

std::string dtype_param_name(const ::testing::TestParamInfo<DType>& info) {
  return dtype_name(info.param);
}

const ScanShape kBehaviourShapes[] = {{2, 1000, 1},  {1, 40000, 1},  {1, 5000, 3},   {2, 33, 64},
                                      {2, 300, 128}, {1, 2000, 256}, {600, 20000, 1}};

TEST_P(CudaCumprodDType, ZerosNanInfAndSignsPropagateLikeASequentialProduct) {
  SCAN_REQUIRE_GPU();
  for (ScanShape shape : kBehaviourShapes) {
    check_case(GetParam(), shape, Inputs::kSpecial);
    if (HasFatalFailure()) return;
  }
}

TEST_P(CudaCumprodDType, InPlace) {
  SCAN_REQUIRE_GPU();
  RunOptions options;
  options.in_place = true;
  for (ScanShape shape : kBehaviourShapes) {
    check_all_inputs(GetParam(), shape, options);
    if (HasFatalFailure()) return;
  }
}

TEST_P(CudaCumprodDType, UnalignedPointersTakeTheScalarPath) {
  SCAN_REQUIRE_GPU();
  RunOptions options;
  options.offset_elements = 1;
  for (ScanShape shape : kBehaviourShapes) {
    check_all_inputs(GetParam(), shape, options);
    if (HasFatalFailure()) return;
  }
}

TEST_P(CudaCumprodDType, LongStridedScan) {
  SCAN_REQUIRE_GPU();
  check_case(GetParam(), ScanShape{1, 1 << 20, 64}, Inputs::kDecayNearOne);
  check_case(GetParam(), ScanShape{1, 1 << 20, 64}, Inputs::kPowersOfTwo);
}

TEST_P(CudaCumprodDType, LookBackFoldsKeepEveryPartialInRange) {
  SCAN_REQUIRE_GPU();
  // 513 tiles of 16-bit elements (look-back windows beyond the first), 3 left over for a ragged
  // last tile. The period that matches the tile gives tile aggregates of alternately 2^+14 and
  // 2^-14; the others keep the case meaningful if the tile size changes.
  const ScanShape shape{1, (1 << 23) + 3, 1};
  for (std::int64_t period : {8192, 16384, 32768}) {
    for (int repeat = 0; repeat < 2; ++repeat) {
      check_pinned_powers(GetParam(), shape, period);
      if (HasFatalFailure() || HasNonfatalFailure()) return;
    }
  }
}

// The failing case of the issue, [1, 2^22 + 3, 1] powers of two, again and again with fresh seeds:
// random walks only rarely give a look-back fold tile aggregates far enough out of balance.
TEST_P(CudaCumprodDType, LongRowPowersOfTwoRepeated) {
  SCAN_REQUIRE_GPU();
  for (int repeat = 0; repeat < 8; ++repeat) {
    check_case(GetParam(), ScanShape{1, (1 << 22) + 3, 1}, Inputs::kPowersOfTwo);
    if (HasFatalFailure() || HasNonfatalFailure()) return;
  }
}

INSTANTIATE_TEST_SUITE_P(AllDTypes, CudaCumprodDType, ::testing::ValuesIn(kAllDTypes),
                         dtype_param_name);

// MM-Rec's production shape, bf16 [2, 8, 32768, 128] along dim 2, and its float32 twin.
TEST(CudaCumprod, ProductionShape) {
  SCAN_REQUIRE_GPU();
  for (DType dtype : {DType::kBFloat16, DType::kFloat32}) {
    check_case(dtype, ScanShape{16, 32768, 128}, Inputs::kDecayNearOne);
    check_case(dtype, ScanShape{16, 32768, 128}, Inputs::kPowersOfTwo);
  }
}

// Launches on two streams at once must not share look-back state.
TEST(CudaCumprod, ConcurrentStreams) {
  SCAN_REQUIRE_GPU();
  constexpr int kStreams = 2;
  const ScanShape shape{4, 1 << 18, 1};  // 32 tiles per row: every launch uses look-back
  const DType dtype = DType::kFloat32;
  const std::size_t bytes = static_cast<std::size_t>(shape.numel()) * sizeof(float);
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  Rng rng(seed);

  cudaStream_t streams[kStreams];
  std::vector<std::vector<double>> references(kStreams);
  std::vector<std::unique_ptr<DeviceBuffer>> ins;
  std::vector<std::unique_ptr<DeviceBuffer>> outs;
  for (int s = 0; s < kStreams; ++s) {
    SCAN_CUDA_OK(cudaStreamCreateWithFlags(&streams[s], cudaStreamNonBlocking));
    const std::vector<double> drawn = draw(shape, Inputs::kPowersOfTwo, rng);
    std::vector<unsigned char> stored(bytes);
    narrow_from_f64(drawn.data(), shape.numel(), dtype, stored.data());
    references[s].resize(drawn.size());
    reference_cumprod(drawn.data(), references[s].data(), shape);
    ins.push_back(std::make_unique<DeviceBuffer>(bytes));
    outs.push_back(std::make_unique<DeviceBuffer>(bytes));
    ASSERT_NE(ins.back()->get(), nullptr);
    ASSERT_NE(outs.back()->get(), nullptr);
    SCAN_CUDA_OK(cudaMemcpy(ins.back()->get(), stored.data(), bytes, cudaMemcpyHostToDevice));
    SCAN_CUDA_OK(cudaMemset(outs.back()->get(), 0xff, bytes));
  }
  // Interleaved launches keep both streams' kernels resident together; each rewrites its output.
  for (int repeat = 0; repeat < 8; ++repeat) {
    for (int s = 0; s < kStreams; ++s) {
      const KernelStatus status =
          cuda_cumprod(ins[s]->get(), outs[s]->get(), shape, dtype, streams[s]);
      ASSERT_TRUE(status.ok()) << status.message();
    }
  }
  SCAN_CUDA_OK(cudaDeviceSynchronize());
  for (int s = 0; s < kStreams; ++s) {
    std::vector<unsigned char> output(bytes);
    SCAN_CUDA_OK(cudaMemcpy(output.data(), outs[s]->get(), bytes, cudaMemcpyDeviceToHost));
    EXPECT_TRUE(matches_reference(references[s], output.data(), dtype, shape, true))
        << "stream " << s;
    SCAN_CUDA_OK(cudaStreamDestroy(streams[s]));
  }
}

// A captured graph replays one launch tag: its workspace flags must be cleared each replay.
TEST(CudaCumprod, GraphReplay) {
  SCAN_REQUIRE_GPU();
  const ScanShape shape{1, 1 << 16, 1};  // several tiles, so look-back state is used
  const DType dtype = DType::kFloat32;
  const std::size_t bytes = static_cast<std::size_t>(shape.numel()) * sizeof(float);
  DeviceBuffer in(bytes);
  DeviceBuffer out(bytes);
  ASSERT_NE(in.get(), nullptr);
  ASSERT_NE(out.get(), nullptr);
  cudaStream_t stream;
  SCAN_CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaGraph_t graph;
  SCAN_CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  const KernelStatus status = cuda_cumprod(in.get(), out.get(), shape, dtype, stream);
  SCAN_CUDA_OK(cudaStreamEndCapture(stream, &graph));
  ASSERT_TRUE(status.ok()) << status.message();
  cudaGraphExec_t exec;
  SCAN_CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));

  const std::uint64_t seed = fresh_seed();
  Rng rng(seed);
  SCOPED_TRACE("seed=" + std::to_string(seed));
  for (int replay = 0; replay < 3; ++replay) {
    const std::vector<double> drawn = draw(shape, Inputs::kPowersOfTwo, rng);
    std::vector<unsigned char> stored(bytes);
    narrow_from_f64(drawn.data(), shape.numel(), dtype, stored.data());
    std::vector<double> reference(drawn.size());
    reference_cumprod(drawn.data(), reference.data(), shape);
    SCAN_CUDA_OK(cudaMemcpy(in.get(), stored.data(), bytes, cudaMemcpyHostToDevice));
    SCAN_CUDA_OK(cudaMemset(out.get(), 0xff, bytes));
    SCAN_CUDA_OK(cudaGraphLaunch(exec, stream));
    SCAN_CUDA_OK(cudaStreamSynchronize(stream));
    std::vector<unsigned char> output(bytes);
    SCAN_CUDA_OK(cudaMemcpy(output.data(), out.get(), bytes, cudaMemcpyDeviceToHost));
    EXPECT_TRUE(matches_reference(reference, output.data(), dtype, shape, true))
        << "replay " << replay;
  }
  SCAN_CUDA_OK(cudaGraphExecDestroy(exec));
  SCAN_CUDA_OK(cudaGraphDestroy(graph));
  SCAN_CUDA_OK(cudaStreamDestroy(stream));
}

// ---- float64: compensated products ------------------------------------------------------------
// float64 accumulates a compensated product (block/accumulator.cuh), so its results are measured
// against the double-double reference, against which a plain float64 product, torch.cumprod's
// sequential loop, carries a random walk of one rounding per factor.

constexpr double kF64Roundoff = 0x1.0p-53;
// The contiguous kernel's float64 tile: 256 threads of 16 elements (policy.cuh).
constexpr std::int64_t kF64ContigTile = 4096;

struct RelativeErrors {
  double worst = 0;
  double rms = 0;
};

// Over the elements whose exact product is a normal number (all of them for decays from 1).
RelativeErrors relative_errors(const std::vector<double>& got, const std::vector<double>& exact) {
  RelativeErrors errors;
  double squares = 0;
  std::int64_t counted = 0;
  for (std::size_t at = 0; at < exact.size(); ++at) {
    if (!(std::fabs(exact[at]) >= DBL_MIN && std::fabs(exact[at]) <= DBL_MAX)) continue;
    const double relative = std::fabs(got[at] - exact[at]) / std::fabs(exact[at]);
    errors.worst = std::max(errors.worst, relative);
    squares += relative * relative;
    ++counted;
  }
  if (counted > 0) errors.rms = std::sqrt(squares / static_cast<double>(counted));
  return errors;
}

std::vector<double> run_float64(const std::vector<double>& input, ScanShape shape) {
  std::vector<unsigned char> stored(input.size() * sizeof(double));
  std::memcpy(stored.data(), input.data(), stored.size());
  std::vector<unsigned char> output;
  run_on_device(stored, DType::kFloat64, shape, RunOptions{}, &output);
  std::vector<double> result(input.size());
  if (output.size() == stored.size()) std::memcpy(result.data(), output.data(), output.size());
  return result;
}

// Decays in (1 - 8 / length, 1): every product stays normal (above e^-8) and every factor rounds.
// The kernel's worst relative error must stay within `roundings` units of 2^-53 and its RMS error
// at or below that of a plain sequential float64 product of the same input.
void check_float64_against_plain(ScanShape shape, double roundings) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE(describe(DType::kFloat64, shape, Inputs::kDecayNearOne, seed));
  Rng rng(seed);
  std::vector<double> input(static_cast<std::size_t>(shape.numel()));
  const double low = 1.0 - 8.0 / static_cast<double>(shape.length);
  for (double& value : input) value = rng.between(low, 1.0);
  std::vector<double> exact(input.size());
  reference_cumprod_double_double(input.data(), exact.data(), shape);
  std::vector<double> plain(input.size());
  reference_cumprod(input.data(), plain.data(), shape);

  std::vector<double> got;
  ASSERT_NO_FATAL_FAILURE(got = run_float64(input, shape));
  const RelativeErrors ours = relative_errors(got, exact);
  const RelativeErrors sequential = relative_errors(plain, exact);
  SCOPED_TRACE(::testing::Message()
               << "worst " << ours.worst / kF64Roundoff << " u (plain "
               << sequential.worst / kF64Roundoff << " u), rms " << ours.rms / kF64Roundoff
               << " u (plain " << sequential.rms / kF64Roundoff << " u)");
  EXPECT_LE(ours.worst, roundings * kF64Roundoff);
  EXPECT_LE(ours.rms, sequential.rms);
}

// Strided look-back publishes the compensated pairs whole, so nothing along the scan is rounded
// but the output: one rounding of value + error (at most 2^-53 relative) plus the dropped
// second-order terms (about length^2 * 2^-106, below 2^-80 here). A plain product of 4096 factors
// walks tens of units from the exact one on some of these millions of chains.
TEST(CudaCumprodFloat64, StridedScansRoundOnlyTheOutput) {
  SCAN_REQUIRE_GPU();
  // [2, 8, 4096, 128] along dim 2 (rows staged in shared memory by default: 64 MiB), rows held in
  // registers with 16-byte packets, and element-wise columns.
  for (ScanShape shape :
       {ScanShape{16, 4096, 128}, ScanShape{3, 4099, 64}, ScanShape{2, 4096, 3}}) {
    check_float64_against_plain(shape, 2);
    if (HasFatalFailure()) return;
  }
}

// Contiguous look-back keeps one double per tile descriptor, so each tile before an element enters
// its prefix through one rounding (of the tile's aggregate or of a prefix covering it) and the
// output through one more: (tiles + 2) * 2^-53 bounds it however the tiles were folded, 258 units
// for 2^20 elements, where a plain product's walk has a standard deviation of 590 units at the
// row's end. Walked rows carry the pair from tile to tile and round only the output.
TEST(CudaCumprodFloat64, LongRowsRoundOncePerTile) {
  SCAN_REQUIRE_GPU();
  // One long row, a few rows of 32 tiles (16-byte packets, and element-wise: odd length), and rows
  // of five tiles enough for one block to walk each.
  for (ScanShape shape : {ScanShape{1, 1 << 20, 1}, ScanShape{4, 131072, 1},
                          ScanShape{3, 131071, 1}, ScanShape{600, 20000, 1}}) {
    const double tiles = static_cast<double>(ceil_div(shape.length, kF64ContigTile));
    check_float64_against_plain(shape, tiles + 2);
    if (HasFatalFailure()) return;
  }
}

// Where the product or its corrected value is zero, infinite or NaN, the plain product decides,
// as in every other dtype: the rows below lie across the first tile boundary of each layout, so
// that the special values also pass through look-back.
TEST(CudaCumprodFloat64, SpecialValuesFollowThePlainProduct) {
  SCAN_REQUIRE_GPU();
  const double huge = 1e300, tiny = 1e-300;
  const std::vector<std::vector<double>> rows = {
      {2.0, 3e307, 10.0, 0.5},        // overflow, then stays infinite
      {DBL_MAX, 1.0 + 0x1p-52, 0.5},  // the exact product rounds up to inf
      {huge, 1e10, 0.0, 3.0},         // inf * 0 is NaN
      {INFINITY, 0.0, 2.0},           // inf * 0 is NaN
      {1.5, std::nan(""), 2.0},       // NaN stays
      {-2.0, 0.0, -1.0, INFINITY},    // -0, then +0, then 0 * inf
      {-0.0, 5.0, -3.0},              // signed zeros
      {tiny, 1e-10, 2.0, 3.0},        // subnormal products
      {tiny, 1e-30, 2.0},             // underflow to 0, then stays 0
      {-tiny, tiny, -1e-20, 0.5},     // underflow to -0 and +0
      {huge, tiny, huge, tiny, huge, tiny, huge, tiny, huge, tiny, 0.5},
  };
  // Contiguous tiles are 4096 elements; strided ones, rows in registers, 4096 rows of one 16-byte
  // packet (inner 2) or 1024 rows of element-wise columns (inner 3): position 4094 straddles a
  // tile boundary in each.
  constexpr std::int64_t kStart = kF64ContigTile - 2;
  for (std::int64_t inner : {1, 2, 3}) {
    for (const auto& row : rows) {
      const ScanShape shape{1, 3 * kF64ContigTile, inner};
      std::vector<double> input(static_cast<std::size_t>(shape.numel()), 1.0);
      for (std::size_t k = 0; k < row.size(); ++k) {
        for (std::int64_t i = 0; i < inner; ++i) {
          input[static_cast<std::size_t>((kStart + static_cast<std::int64_t>(k)) * inner + i)] =
              row[k];
        }
      }
      std::vector<double> exact(input.size());
      reference_cumprod_double_double(input.data(), exact.data(), shape);
      std::vector<double> got;
      ASSERT_NO_FATAL_FAILURE(got = run_float64(input, shape));
      for (std::size_t at = 0; at < input.size(); ++at) {
        const bool special = std::isnan(exact[at]) || std::isinf(exact[at]) || exact[at] == 0;
        const bool ok =
            special ? (std::isnan(exact[at]) ? std::isnan(got[at])
                                             : got[at] == exact[at] &&
                                                   std::signbit(got[at]) == std::signbit(exact[at]))
                    : ulp_distance(got[at], exact[at], DType::kFloat64) <= 2;
        if (!ok) {
          ADD_FAILURE() << "inner " << inner << ", row starting " << row[0] << ", element " << at
                        << ": got " << got[at] << ", want " << exact[at];
          break;
        }
      }
    }
  }
}

// ---- Arguments ----------------------------------------------------------------------------------
// These return before any CUDA call, so they run (and must pass) on machines without a GPU too.

TEST(CudaCumprodArguments, ZeroElementsIsANoOp) {
  for (ScanShape shape : {ScanShape{0, 5, 5}, ScanShape{5, 0, 5}, ScanShape{5, 5, 0}}) {
    EXPECT_TRUE(cuda_cumprod(nullptr, nullptr, shape, DType::kFloat32, nullptr).ok());
  }
}

TEST(CudaCumprodArguments, RejectsInvalidShapesAndPointers) {
  float dummy[4] = {};
  const auto expect_invalid = [](const KernelStatus& status) {
    EXPECT_EQ(status.code(), KernelStatus::Code::kInvalidArgument) << status.message();
  };
  expect_invalid(cuda_cumprod(dummy, dummy, ScanShape{-1, 2, 2}, DType::kFloat32, nullptr));
  expect_invalid(cuda_cumprod(nullptr, dummy, ScanShape{1, 2, 2}, DType::kFloat32, nullptr));
  expect_invalid(cuda_cumprod(dummy, nullptr, ScanShape{1, 2, 2}, DType::kFloat32, nullptr));
  expect_invalid(
      cuda_cumprod(dummy, dummy + 1, ScanShape{1, 2, 2}, DType::kFloat32, nullptr));  // overlap
  expect_invalid(cuda_cumprod(dummy, dummy, ScanShape{1LL << 40, 1LL << 40, 1}, DType::kFloat32,
                              nullptr));  // overflow
}

TEST(CudaCumprodArguments, RejectsHostMemoryWithoutFaulting) {
  SCAN_REQUIRE_GPU();
  std::vector<float> host(64, 0.5f);
  const KernelStatus status =
      cuda_cumprod(host.data(), host.data(), ScanShape{1, 64, 1}, DType::kFloat32, nullptr);
  EXPECT_EQ(status.code(), KernelStatus::Code::kInvalidArgument) << status.message();
  // The context is still healthy: a real launch works afterwards.
  check_case(DType::kFloat32, ScanShape{1, 64, 1}, Inputs::kDecayHalf);
}

}  // namespace
}  // namespace scan::kernels

// cpu-torch against the float64 reference on fresh random inputs: every dtype, ranks 1-5, every
// dim, lengths 1, odd, prime and 32768, and the special values a sequential product propagates.
#include "backends/cpu_torch_backend.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/backend_agreement.h"
#include "scan/kernels/cpu_cumprod.h"
#include "scan/kernels/reference.h"
#include "scan/kernels/thread_pool.h"

namespace scan::server {
namespace {

using kernels::DType;

constexpr DType kAllDtypes[] = {DType::kFloat32, DType::kFloat64, DType::kFloat16,
                                DType::kBFloat16};

std::vector<std::int64_t> random_shape(std::mt19937_64& generator, int rank) {
  static const std::int64_t sizes[] = {1, 2, 3, 5, 7, 13, 31, 33, 64};
  std::uniform_int_distribution<std::size_t> pick(0, std::size(sizes) - 1);
  std::vector<std::int64_t> shape(static_cast<std::size_t>(rank));
  for (auto& size : shape) size = sizes[pick(generator)];
  return shape;
}

// Runs the backend on `values` (stored into `dtype`) and checks every element.
void expect_matches_reference(ScanBackend& backend, DType dtype, const std::vector<double>& values,
                              const std::vector<std::int64_t>& shape, int dim) {
  const auto view = kernels::collapse_around(shape.data(), static_cast<int>(shape.size()), dim);
  const std::int64_t count = view.numel();
  const std::size_t bytes = static_cast<std::size_t>(count) * kernels::element_size(dtype);
  std::vector<unsigned char> input(bytes);
  kernels::narrow_from_f64(values.data(), count, dtype, input.data());
  // Poison the output so that an element left unwritten cannot pass.
  std::vector<unsigned char> output(bytes, 0xA5);

  ASSERT_TRUE(backend.run({dtype, view, input.data(), output.data()}).ok());

  const std::vector<double> stored = kernels::widen_to_f64(input.data(), dtype, count);
  std::vector<double> expected(stored.size());
  kernels::reference_cumprod(stored.data(), expected.data(), view);
  const auto comparison = kernels::compare_to_reference(
      expected.data(), output.data(), dtype, count, kernels::cumprod_tolerance(dtype, view.length));
  EXPECT_TRUE(comparison.ok()) << kernels::dtype_name(dtype) << " dim " << dim << ": "
                               << comparison.mismatches << " of " << count << " mismatch, first at "
                               << comparison.first_mismatch;
}

std::vector<double> random_decays(std::mt19937_64& generator, std::int64_t count) {
  std::uniform_real_distribution<double> decay(0.5, 1.0);
  std::vector<double> values(static_cast<std::size_t>(count));
  for (auto& value : values) value = decay(generator);
  return values;
}

TEST(CpuTorchBackend, EveryDtypeRankAndDim) {
  auto backend = make_cpu_torch_backend();
  EXPECT_EQ(backend->name(), "cpu-torch");
  std::mt19937_64 generator(std::random_device{}());
  for (const DType dtype : kAllDtypes) {
    for (int rank = 1; rank <= 5; ++rank) {
      const auto shape = random_shape(generator, rank);
      std::int64_t count = 1;
      for (const auto size : shape) count *= size;
      const auto values = random_decays(generator, count);
      for (int dim = 0; dim < rank; ++dim) {
        expect_matches_reference(*backend, dtype, values, shape, dim);
      }
    }
  }
}

TEST(CpuTorchBackend, LengthsOneOddPrimeAndLong) {
  auto backend = make_cpu_torch_backend();
  std::mt19937_64 generator(std::random_device{}());
  for (const DType dtype : kAllDtypes) {
    for (const std::int64_t length : {1, 2, 17, 127, 1021, 32768}) {
      const std::vector<std::int64_t> shape{2, 3, length, 5};
      const auto values = random_decays(generator, 30 * length);
      expect_matches_reference(*backend, dtype, values, shape, 2);
    }
  }
}

TEST(CpuTorchBackend, MmRecProductionLayoutInDecaysNearOne) {
  auto backend = make_cpu_torch_backend();
  std::mt19937_64 generator(std::random_device{}());
  std::uniform_real_distribution<double> decay(1 - 1e-4, 1 - 1e-6);  // the model clamps here
  const std::vector<std::int64_t> shape{1, 2, 4096, 16};
  std::vector<double> values(2 * 4096 * 16);
  for (auto& value : values) value = decay(generator);
  for (const DType dtype : kAllDtypes) expect_matches_reference(*backend, dtype, values, shape, 2);
}

TEST(CpuTorchBackend, ZerosNaNInfinitiesAndSignsPropagate) {
  auto backend = make_cpu_torch_backend();
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  // Each column hides one special value in a different place along the scanned dim.
  const std::vector<double> column_values[] = {
      {0.5, 0.0, 0.9, 0.7, 0.8, 0.6},    // zero: the rest stays zero
      {0.5, -0.9, 0.9, -0.7, 0.8, 0.6},  // signs alternate
      {0.5, 0.9, nan, 0.7, 0.8, 0.6},    // NaN from its step on
      {0.5, 0.9, inf, 0.7, 0.8, 0.6},    // Inf stays Inf
      {0.5, 0.9, inf, 0.0, 0.8, 0.6},    // Inf * 0 = NaN
      {-0.0, 0.9, 0.5, 0.7, 0.8, 0.6},   // negative zero keeps its sign
  };
  const std::int64_t length = 6;
  const std::int64_t columns = std::size(column_values);
  std::vector<double> values(static_cast<std::size_t>(length * columns));
  for (std::int64_t column = 0; column < columns; ++column) {
    for (std::int64_t step = 0; step < length; ++step) {
      values[static_cast<std::size_t>(step * columns + column)] = column_values[column][step];
    }
  }
  for (const DType dtype : kAllDtypes) {
    expect_matches_reference(*backend, dtype, values, {length, columns}, 0);
  }
}

TEST(CpuTorchBackend, MisalignedBuffersAreHandled) {
  auto backend = make_cpu_torch_backend();
  std::mt19937_64 generator(std::random_device{}());
  const auto values = random_decays(generator, 3 * 37);
  const kernels::ScanShape view{3, 37, 1};
  std::vector<unsigned char> input(3 * 37 * 4 + 1), output(3 * 37 * 4 + 1, 0xA5);
  kernels::narrow_from_f64(values.data(), 3 * 37, DType::kFloat32, input.data() + 1);
  ASSERT_TRUE(backend->run({DType::kFloat32, view, input.data() + 1, output.data() + 1}).ok());
  const auto stored = kernels::widen_to_f64(input.data() + 1, DType::kFloat32, 3 * 37);
  std::vector<double> expected(stored.size());
  kernels::reference_cumprod(stored.data(), expected.data(), view);
  EXPECT_TRUE(kernels::compare_to_reference(expected.data(), output.data() + 1, DType::kFloat32,
                                            3 * 37, kernels::cumprod_tolerance(DType::kFloat32, 37))
                  .ok());
}

// Both CPU backends accumulate in float64 and round once, so AUTO's choice between them must not
// change an answer: at least 99.99% of elements bit-identical, none more than 1 ulp apart, and
// special values identical. The native kernel runs on a pool, so its chained and tiled paths
// reassociate the products that LibTorch multiplies in sequence.
void expect_backends_agree(const std::vector<unsigned char>& input, DType dtype,
                           kernels::ScanShape shape, bool flush, const std::string& what,
                           bool reassociates = false) {
  static kernels::ThreadPool pool(3);
  auto torch_backend = make_cpu_torch_backend(flush);
  std::vector<unsigned char> from_torch(input.size(), 0xA5), native(input.size(), 0x5A);
  ASSERT_TRUE(torch_backend->run({dtype, shape, input.data(), from_torch.data()}).ok());
  kernels::CpuScanOptions options;
  options.pool = &pool;
  options.flush_subnormals = flush;
  ASSERT_TRUE(kernels::cpu_cumprod(input.data(), native.data(), shape, dtype, options).ok());
  SCOPED_TRACE(what + " " + kernels::dtype_name(dtype) + (flush ? ", flushing" : ""));
  if (reassociates && dtype == DType::kFloat64) {
    // Both within the sequential-product bound of the float64 result, so of each other within
    // twice that bound.
    const std::vector<double> torch_wide =
        kernels::widen_to_f64(from_torch.data(), dtype, shape.numel());
    kernels::Tolerance tolerance = kernels::cumprod_tolerance(dtype, shape.length);
    tolerance.rtol *= 2;
    tolerance.atol *= 2;
    EXPECT_TRUE(kernels::compare_to_reference(torch_wide.data(), native.data(), dtype,
                                              shape.numel(), tolerance)
                    .ok());
    return;
  }
  EXPECT_TRUE(agreement::agree(from_torch.data(), native.data(), dtype, shape.numel()));
}

TEST(CpuTorchBackend, BitIdenticalToTheNativeKernel) {
  std::mt19937_64 generator(std::random_device{}());
  for (const DType dtype : kAllDtypes) {
    for (const auto& c : agreement::cases()) {
      const std::vector<unsigned char> input = agreement::input(c, dtype, generator);
      expect_backends_agree(input, dtype, c.shape, /*flush=*/false, c.name, c.reassociates_float64);
    }
  }
}

// Special values and products beyond the stored range, flushed or not, along rows and columns.
TEST(CpuTorchBackend, SpecialValuesAreIdenticalToTheNativeKernel) {
  for (const DType dtype : kAllDtypes) {
    const agreement::SpecialRows special = agreement::special_rows(dtype);
    for (const bool flush : {false, true}) {
      expect_backends_agree(special.rows, dtype, special.row_shape, flush, "special rows");
      expect_backends_agree(special.columns, dtype, special.column_shape, flush, "special columns");
    }
  }
}

TEST(CpuTorchBackend, EmptyTensorIsANoOp) {
  auto backend = make_cpu_torch_backend();
  EXPECT_TRUE(backend->run({DType::kFloat32, {4, 0, 3}, nullptr, nullptr}).ok());
}

}  // namespace
}  // namespace scan::server

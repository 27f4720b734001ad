// The GPU backend (server/backends/cuda_backend.h) against the float64 reference: every dtype
// through the chunked pipeline with tiny pieces (carried rows, rows split into column ranges,
// 16-bit widening), the production shape with the default pieces, concurrent requests sharing
// lanes, and the unhealthy/probe cycle. Skips where there is no usable GPU (CI has nvcc only).
#include "backends/cuda_backend.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backends/cpu_torch_backend.h"
#include "common/backend_agreement.h"
#include "scan/kernels/cpu_cumprod.h"
#include "scan/kernels/cuda_cumprod.h"
#include "scan/kernels/reference.h"
#include "scan/kernels/thread_pool.h"

namespace scan::server {
namespace {

using kernels::DType;
using kernels::ScanShape;

#define SCAN_REQUIRE_GPU()                                                             \
  do {                                                                                 \
    if (!kernels::cuda_device_available()) {                                           \
      GTEST_SKIP() << "no usable CUDA device: " << kernels::cuda_device_description(); \
    }                                                                                  \
  } while (false)

std::unique_ptr<ScanBackend> make_backend(const CudaBackendOptions& options) {
  std::string error;
  auto backend = make_cuda_backend(0, options, &error);
  EXPECT_NE(backend, nullptr) << error;
  return backend;
}

// Runs `shape` of `dtype` on `backend` (inputs drawn near 1 so that long scans stay normal
// numbers and every carry matters) and checks every element; returns the job's stats.
ScanJobStats expect_correct(ScanBackend& backend, DType dtype, ScanShape shape,
                            std::uint64_t seed) {
  const std::int64_t count = shape.numel();
  std::mt19937_64 generator(seed);
  std::uniform_real_distribution<double> decay(0.995, 1.003);
  std::vector<double> values(static_cast<std::size_t>(count));
  for (double& value : values) value = decay(generator);
  const std::size_t bytes = static_cast<std::size_t>(count) * kernels::element_size(dtype);
  std::vector<char> input(bytes), output(bytes, 0x55);
  kernels::narrow_from_f64(values.data(), count, dtype, input.data());
  const std::vector<double> stored = kernels::widen_to_f64(input.data(), dtype, count);
  std::vector<double> expected(stored.size());
  kernels::reference_cumprod(stored.data(), expected.data(), shape);

  ScanJobStats stats;
  const kernels::KernelStatus status =
      backend.run({dtype, shape, input.data(), output.data(), &stats});
  EXPECT_TRUE(status.ok()) << status.message();
  const kernels::Comparison comparison =
      kernels::compare_to_reference(expected.data(), output.data(), dtype, count,
                                    kernels::cumprod_tolerance(dtype, shape.length));
  EXPECT_TRUE(comparison.ok()) << kernels::dtype_name(dtype) << " {" << shape.outer << ", "
                               << shape.length << ", " << shape.inner
                               << "}: " << comparison.mismatches << " mismatches, first at "
                               << comparison.first_mismatch << ", seed " << seed;
  return stats;
}

TEST(CudaBackend, DiscoveryFindsTheDevice) {
  SCAN_REQUIRE_GPU();
  const kernels::GpuInventory inventory = kernels::discover_gpus();
  ASSERT_FALSE(inventory.devices.empty()) << inventory.status;
  EXPECT_TRUE(inventory.devices[0].usable) << inventory.devices[0].detail;
  EXPECT_GT(inventory.devices[0].total_memory_bytes, 0);
  EXPECT_GE(inventory.devices[0].compute_capability_major, 8);
}

TEST(CudaBackend, EveryDtypeThroughTinyPieces) {
  SCAN_REQUIRE_GPU();
  CudaBackendOptions options;
  options.pipeline.lanes = 1;
  options.pipeline.slots_per_lane = 3;
  options.pipeline.chunk_bytes = 64
                                 << 10;  // 16K float32 elements: most shapes below span many pieces
  auto backend = make_backend(options);
  ASSERT_NE(backend, nullptr);
  const ScanShape shapes[] = {{1, 1, 1},     {3, 257, 5},    {2, 3000, 17}, {1, 40000, 1},
                              {2, 5, 20000}, {16, 512, 128}, {7, 1, 3}};
  const std::uint64_t seed = std::random_device{}();
  for (const DType dtype : {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16}) {
    for (const ScanShape shape : shapes) expect_correct(*backend, dtype, shape, seed);
  }
}

TEST(CudaBackend, ProductionShapeWithDefaultPieces) {
  SCAN_REQUIRE_GPU();
  auto backend = make_backend({});
  ASSERT_NE(backend, nullptr);
  EXPECT_GT(backend->device_memory_bytes(), 0);
  for (const DType dtype : {DType::kFloat32, DType::kBFloat16}) {
    const ScanShape shape{16, 32768, 128};      // [2, 8, 32768, 128] along seq_len
    expect_correct(*backend, dtype, shape, 1);  // warm-up, also checked
    const auto start = std::chrono::steady_clock::now();
    const ScanJobStats stats = expect_correct(*backend, dtype, shape, 2);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_GT(stats.host_to_device_seconds, 0);
    EXPECT_GT(stats.device_to_host_seconds, 0);
    std::printf("%s [2,8,32768,128]: %.0f MiB, run+check %.1f ms, H2D %.2f ms, D2H %.2f ms\n",
                kernels::dtype_name(dtype),
                static_cast<double>(shape.numel() * kernels::element_size(dtype)) / (1 << 20),
                seconds * 1e3, stats.host_to_device_seconds * 1e3,
                stats.device_to_host_seconds * 1e3);
  }
}

// AUTO may send a request to the GPU or to either CPU backend: all three accumulate in float64 and
// round once, so the answer must be the same (at least 99.99% bit-identical, at most 1 ulp, special
// values identical), whole-tensor and through pieces that carry.
TEST(CudaBackend, AgreesWithBothCpuBackends) {
  SCAN_REQUIRE_GPU();
  CudaBackendOptions tiny;
  tiny.pipeline.lanes = 1;
  tiny.pipeline.chunk_bytes = 64 << 10;  // every case below spans pieces that carry
  auto whole = make_backend({});
  auto pieces = make_backend(tiny);
  ASSERT_NE(whole, nullptr);
  ASSERT_NE(pieces, nullptr);
  auto torch_backend = make_cpu_torch_backend();
  kernels::ThreadPool pool(3);
  kernels::CpuScanOptions native_options;
  native_options.pool = &pool;
  std::mt19937_64 generator(std::random_device{}());

  const auto compare = [&](const std::vector<unsigned char>& input, DType dtype, ScanShape shape,
                           const std::string& what) {
    const std::int64_t count = shape.numel();
    std::vector<unsigned char> from_torch(input.size(), 0xA5), native(input.size(), 0x5A);
    ASSERT_TRUE(torch_backend->run({dtype, shape, input.data(), from_torch.data()}).ok());
    ASSERT_TRUE(
        kernels::cpu_cumprod(input.data(), native.data(), shape, dtype, native_options).ok());
    for (ScanBackend* gpu : {whole.get(), pieces.get()}) {
      SCOPED_TRACE(what + " " + kernels::dtype_name(dtype) +
                   (gpu == whole.get() ? ", whole" : ", in pieces"));
      std::vector<unsigned char> from_gpu(input.size(), 0x33);
      ASSERT_TRUE(gpu->run({dtype, shape, input.data(), from_gpu.data()}).ok());
      if (dtype == DType::kFloat64) {
        // float64 has no wider accumulator: the GPU's blocked scan reassociates float64 products,
        // so it is held to the sequential-product error bound of the reference instead.
        const std::vector<double> wide = kernels::widen_to_f64(input.data(), dtype, count);
        std::vector<double> expected(wide.size());
        kernels::reference_cumprod(wide.data(), expected.data(), shape);
        EXPECT_TRUE(kernels::compare_to_reference(expected.data(), from_gpu.data(), dtype, count,
                                                  kernels::cumprod_tolerance(dtype, shape.length))
                        .ok());
        continue;
      }
      EXPECT_TRUE(agreement::agree(from_torch.data(), from_gpu.data(), dtype, count)) << "torch";
      EXPECT_TRUE(agreement::agree(native.data(), from_gpu.data(), dtype, count)) << "native";
    }
  };
  for (const DType dtype : {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16}) {
    for (const auto& c : agreement::cases()) {
      compare(agreement::input(c, dtype, generator), dtype, c.shape, c.name);
    }
    const agreement::SpecialRows special = agreement::special_rows(dtype);
    compare(special.rows, dtype, special.row_shape, "special rows");
    compare(special.columns, dtype, special.column_shape, "special columns");
  }
}

TEST(CudaBackend, ConcurrentRequestsShareTheLanes) {
  SCAN_REQUIRE_GPU();
  CudaBackendOptions options;
  options.pipeline.lanes = 2;
  options.pipeline.chunk_bytes = 256 << 10;
  auto backend = make_backend(options);
  ASSERT_NE(backend, nullptr);
  std::vector<std::thread> threads;
  for (int thread = 0; thread < 4; ++thread) {
    threads.emplace_back([&backend, thread] {
      const ScanShape shapes[] = {{4, 1000, 33}, {1, 70000, 2}, {8, 64, 64}};
      for (int round = 0; round < 3; ++round) {
        for (const ScanShape shape : shapes) {
          const DType dtype = (thread + round) % 2 == 0 ? DType::kFloat32 : DType::kBFloat16;
          expect_correct(*backend, dtype, shape, static_cast<std::uint64_t>(thread * 100 + round));
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
}

TEST(CudaBackend, RepeatedErrorsMarkItUnhealthyUntilAProbePasses) {
  SCAN_REQUIRE_GPU();
  CudaBackendOptions options;
  options.pipeline.lanes = 1;
  options.pipeline.chunk_bytes = 1 << 20;
  options.max_consecutive_errors = 3;
  options.probe_interval_seconds = 0.2;
  options.injected_failures = 3;
  auto backend = make_backend(options);
  ASSERT_NE(backend, nullptr);
  std::atomic<int> downs{0}, ups{0};
  backend->on_availability_change([&](bool up) { ++(up ? ups : downs); });

  std::vector<float> input(1000, 0.5f), output(1000);
  const ScanJob job{DType::kFloat32, {10, 100, 1}, input.data(), output.data()};
  for (int attempt = 0; attempt < 3; ++attempt) {
    EXPECT_TRUE(backend->available());
    EXPECT_EQ(backend->run(job).code(), kernels::KernelStatus::Code::kDeviceError);
  }
  EXPECT_FALSE(backend->available());
  EXPECT_EQ(downs.load(), 1);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!backend->available() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(backend->available());
  EXPECT_EQ(ups.load(), 1);
  expect_correct(*backend, DType::kFloat32, {3, 300, 7}, 5);
  backend->on_availability_change(nullptr);
}

// The keep-awake window (CudaPipelineOptions::keep_awake_seconds): jobs come out right while its
// thread launches empty kernels beside them, a job after the window has closed (the thread parked)
// opens it again, and a pipeline destroyed with the window open stops at once rather than at its
// end.
TEST(CudaBackend, KeepAwakeWindowLeavesJobsRightAndStopsPromptly) {
  SCAN_REQUIRE_GPU();
  CudaBackendOptions options;
  options.pipeline.lanes = 1;
  options.pipeline.chunk_bytes = 64 << 10;  // pieces that carry, so each job is many launches
  options.pipeline.keep_awake_seconds = 0.3;
  auto backend = make_backend(options);
  ASSERT_NE(backend, nullptr);
  for (int round = 0; round < 5; ++round) {
    expect_correct(*backend, DType::kFloat32, {3, 5000, 7}, static_cast<std::uint64_t>(round));
    std::this_thread::sleep_for(std::chrono::milliseconds(25));  // a few empty kernels between
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  expect_correct(*backend, DType::kBFloat16, {2, 3000, 17}, 7);
  const auto start = std::chrono::steady_clock::now();
  backend.reset();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 1.0);
}

// Page-aligned host memory of its own (registrations are per page: two ranges sharing a page
// cannot both be registered).
struct HostBuffer {
  explicit HostBuffer(std::size_t bytes)
      : size((bytes + 4095) / 4096 * 4096),
        data(static_cast<char*>(std::aligned_alloc(4096, size)), &std::free) {}
  std::size_t size;
  std::unique_ptr<char, decltype(&std::free)> data;
};

// Like expect_correct, with input and output `offset` bytes into buffers of their own, registered
// with `registry` as asked; also checks that exactly the registered sides were copied directly.
void expect_correct_registered(ScanBackend& backend, kernels::CudaHostRegistry& registry,
                               DType dtype, ScanShape shape, bool register_input,
                               bool register_output, std::size_t offset, std::uint64_t seed) {
  const std::int64_t count = shape.numel();
  const std::size_t bytes = static_cast<std::size_t>(count) * kernels::element_size(dtype);
  HostBuffer input_buffer(bytes + offset + 1), output_buffer(bytes + offset + 1);
  char* input = input_buffer.data.get() + offset;
  char* output = output_buffer.data.get() + offset;
  std::memset(output_buffer.data.get(), 0x55, output_buffer.size);
  std::mt19937_64 generator(seed);
  std::uniform_real_distribution<double> decay(0.995, 1.003);
  std::vector<double> values(static_cast<std::size_t>(count));
  for (double& value : values) value = decay(generator);
  kernels::narrow_from_f64(values.data(), count, dtype, input);
  const std::vector<double> stored = kernels::widen_to_f64(input, dtype, count);
  std::vector<double> expected(stored.size());
  kernels::reference_cumprod(stored.data(), expected.data(), shape);

  if (register_input) registry.register_async(input_buffer.data.get(), input_buffer.size);
  if (register_output) registry.register_async(output_buffer.data.get(), output_buffer.size);
  registry.wait_idle();
  const std::int64_t direct_before = registry.direct_transfers();
  ScanJobStats stats;
  const kernels::KernelStatus status = backend.run({dtype, shape, input, output, &stats});
  EXPECT_TRUE(status.ok()) << status.message();
  EXPECT_EQ(registry.direct_transfers() - direct_before,
            (register_input ? 1 : 0) + (register_output ? 1 : 0));
  registry.unregister(input_buffer.data.get(), input_buffer.size);
  registry.unregister(output_buffer.data.get(), output_buffer.size);
  const kernels::Comparison comparison = kernels::compare_to_reference(
      expected.data(), output, dtype, count, kernels::cumprod_tolerance(dtype, shape.length));
  EXPECT_TRUE(comparison.ok()) << kernels::dtype_name(dtype) << " {" << shape.outer << ", "
                               << shape.length << ", " << shape.inner << "} input "
                               << (register_input ? "registered" : "pageable") << ", output "
                               << (register_output ? "registered" : "pageable") << ", offset "
                               << offset << ": " << comparison.mismatches
                               << " mismatches, first at " << comparison.first_mismatch;
  // Nothing past the output was written.
  for (std::size_t index = offset + bytes; index < output_buffer.size; ++index) {
    if (output_buffer.data.get()[index] != 0x55) {
      ADD_FAILURE() << "byte " << index - offset - bytes << " past the output was written";
      break;
    }
  }
}

TEST(CudaBackend, RegisteredInputAndOutputAreCopiedDirectly) {
  SCAN_REQUIRE_GPU();
  auto registry = std::make_shared<kernels::CudaHostRegistry>();
  CudaBackendOptions options;
  options.pipeline.lanes = 1;
  options.pipeline.slots_per_lane = 3;
  options.pipeline.chunk_bytes = 64 << 10;
  options.pipeline.host_registry = registry;
  auto backend = make_backend(options);
  ASSERT_NE(backend, nullptr);
  const ScanShape shapes[] = {{1, 1, 1},     {3, 257, 5}, {2, 3000, 17}, {1, 40001, 1},
                              {2, 5, 20001}, {7, 1, 3},   {16, 33, 129}};
  const std::uint64_t seed = std::random_device{}();
  for (const DType dtype : {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16}) {
    for (const ScanShape shape : shapes) {
      for (int sides = 0; sides < 4; ++sides) {
        for (const std::size_t offset : {std::size_t{0}, std::size_t{6}}) {
          expect_correct_registered(*backend, *registry, dtype, shape, (sides & 1) != 0,
                                    (sides & 2) != 0, offset, seed + sides);
        }
      }
    }
  }
  EXPECT_EQ(registry->registered_bytes(), 0);
}

TEST(CudaBackend, RegistryCountsRegisteredBytesAndRefusesOverlaps) {
  SCAN_REQUIRE_GPU();
  auto registry = std::make_unique<kernels::CudaHostRegistry>();
  HostBuffer buffer(1 << 20);
  registry->register_async(buffer.data.get(), buffer.size);
  // Shares every page with the first: cannot be registered, stays staged.
  registry->register_async(buffer.data.get() + 8192, 4096);
  registry->wait_idle();
  EXPECT_EQ(registry->registered_bytes(), static_cast<std::int64_t>(buffer.size));
  registry->unregister(buffer.data.get() + 8192, 4096);
  registry->unregister(buffer.data.get(), buffer.size);
  EXPECT_EQ(registry->registered_bytes(), 0);
  registry->unregister(buffer.data.get(), buffer.size);  // unknown by now: nothing to do
}

// The production shape with the default pieces, staged and then registered: how much the staging
// copies cost (printed; the figures are in bench/RESULTS.md).
TEST(CudaBackend, ProductionShapeRegisteredSkipsStaging) {
  SCAN_REQUIRE_GPU();
  auto registry = std::make_shared<kernels::CudaHostRegistry>();
  CudaBackendOptions options;
  options.pipeline.host_registry = registry;
  auto backend = make_backend(options);
  ASSERT_NE(backend, nullptr);
  const ScanShape shape{16, 32768, 128};
  const std::size_t bytes = static_cast<std::size_t>(shape.numel()) * sizeof(float);
  HostBuffer input(bytes), output(bytes);
  std::vector<float> values(static_cast<std::size_t>(shape.numel()), 0.9999f);
  std::memcpy(input.data.get(), values.data(), bytes);
  const ScanJob job{DType::kFloat32, shape, input.data.get(), output.data.get()};
  auto timed = [&] {
    double best = 1e9;
    for (int run = 0; run < 4; ++run) {
      const auto start = std::chrono::steady_clock::now();
      EXPECT_TRUE(backend->run(job).ok());
      best = std::min(
          best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                    .count());
    }
    return best;
  };
  const double staged = timed();
  const auto start = std::chrono::steady_clock::now();
  registry->register_async(input.data.get(), input.size);
  registry->register_async(output.data.get(), output.size);
  registry->wait_idle();
  const double registering =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  const double direct = timed();
  std::printf(
      "float32 [2,8,32768,128] 256 MiB run (best of 4): staged %.2f ms, registered %.2f ms "
      "(registering both buffers took %.1f ms)\n",
      staged, direct, registering);
  registry->unregister(input.data.get(), input.size);
  registry->unregister(output.data.get(), output.size);
  EXPECT_LT(direct, staged);
}

}  // namespace
}  // namespace scan::server

#include "routing/router.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <thread>

#include "routing/calibration.h"

namespace scan::server {
namespace {

class FakeBackend final : public ScanBackend {
 public:
  FakeBackend(std::string name, DeviceKind kind) : name_(std::move(name)), kind_(kind) {}
  const std::string& name() const override { return name_; }
  DeviceKind device_kind() const override { return kind_; }
  kernels::KernelStatus run(const ScanJob&) override { return kernels::KernelStatus::Ok(); }
  bool available() const override { return up_; }
  void set_available(bool up) { up_ = up; }

 private:
  std::string name_;
  DeviceKind kind_;
  std::atomic<bool> up_{true};
};

ValidatedScan scan_preferring(v1::BackendPreference preference) {
  ValidatedScan scan;
  scan.preference = preference;
  return scan;
}

std::string routed_name(Router& router, v1::BackendPreference preference) {
  RegisteredBackend* chosen = nullptr;
  const Outcome outcome = router.route(scan_preferring(preference), &chosen);
  return outcome.ok() ? chosen->backend->name()
                      : "refused:" + std::to_string(static_cast<int>(outcome.reason()));
}

TEST(Router, CpuOnlyServerServesAutoAndCpuAndRefusesGpu) {
  Router router;
  router.add_backend(std::make_unique<FakeBackend>("cpu-fake", DeviceKind::kCpu), 1);
  EXPECT_EQ(routed_name(router, v1::BACKEND_PREFERENCE_AUTO), "cpu-fake");
  EXPECT_EQ(routed_name(router, v1::BACKEND_PREFERENCE_CPU), "cpu-fake");
  EXPECT_EQ(routed_name(router, v1::BACKEND_PREFERENCE_GPU),
            "refused:" + std::to_string(static_cast<int>(Refusal::kFailedPrecondition)));
}

TEST(Router, ExplicitPreferencesAreHonouredWhenBothExist) {
  Router router;
  router.add_backend(std::make_unique<FakeBackend>("cpu-fake", DeviceKind::kCpu), 1);
  router.add_backend(std::make_unique<FakeBackend>("gpu-fake", DeviceKind::kGpu), 1);
  EXPECT_EQ(routed_name(router, v1::BACKEND_PREFERENCE_CPU), "cpu-fake");
  EXPECT_EQ(routed_name(router, v1::BACKEND_PREFERENCE_GPU), "gpu-fake");
}

TEST(Router, EmptyRouterIsUnavailable) {
  Router router;
  EXPECT_EQ(routed_name(router, v1::BACKEND_PREFERENCE_CPU),
            "refused:" + std::to_string(static_cast<int>(Refusal::kUnavailable)));
}

}  // namespace
}  // namespace scan::server

namespace scan::server {
namespace {

ValidatedScan scan_of_bytes(std::size_t bytes, v1::BackendPreference preference) {
  ValidatedScan scan;
  scan.bytes = bytes;
  scan.preference = preference;
  return scan;
}

std::string routed_for_bytes(Router& router, std::size_t bytes,
                             v1::BackendPreference preference = v1::BACKEND_PREFERENCE_AUTO) {
  RegisteredBackend* chosen = nullptr;
  EXPECT_TRUE(router.route(scan_of_bytes(bytes, preference), &chosen).ok());
  return chosen == nullptr ? "" : chosen->backend->name();
}

TEST(Router, PicksTheLowestPredictedTimeForEachSize) {
  Router router;
  router.add_backend(std::make_unique<FakeBackend>("cpu-high-fixed", DeviceKind::kCpu), 1);
  router.add_backend(std::make_unique<FakeBackend>("cpu-slow-stream", DeviceKind::kCpu), 1);
  // 100 us + 10 GB/s against 1 us + 1 GB/s: they cross at 11 kB.
  router.set_cost_model(0, {100e-6, 10e9});
  router.set_cost_model(1, {1e-6, 1e9});
  EXPECT_EQ(routed_for_bytes(router, 1'000), "cpu-slow-stream");
  EXPECT_EQ(routed_for_bytes(router, 1'000'000), "cpu-high-fixed");
  EXPECT_EQ(routed_for_bytes(router, 1'000, v1::BACKEND_PREFERENCE_CPU), "cpu-slow-stream");
}

TEST(Router, CalibratedBackendsRankBeforeUnknownOnes) {
  Router router;
  router.add_backend(std::make_unique<FakeBackend>("cpu-unknown", DeviceKind::kCpu), 1);
  router.add_backend(std::make_unique<FakeBackend>("cpu-known", DeviceKind::kCpu), 1);
  EXPECT_EQ(routed_for_bytes(router, 64), "cpu-unknown");  // nothing known: registration order
  router.set_cost_model(1, {1e-3, 1e6});
  EXPECT_EQ(routed_for_bytes(router, 64), "cpu-known");
}

TEST(CostModel, FitRecoversALineAndStaysPhysical) {
  const CostModel line = fit_cost_model(
      {{1e3, 20e-6 + 1e3 / 2e9}, {1e6, 20e-6 + 1e6 / 2e9}, {4e6, 20e-6 + 4e6 / 2e9}});
  EXPECT_NEAR(line.fixed_seconds, 20e-6, 1e-9);
  EXPECT_NEAR(line.bytes_per_second, 2e9, 1e3);
  // Noise tilting the line downwards must not produce a negative throughput.
  const CostModel tilted = fit_cost_model({{1e3, 5e-3}, {1e6, 1e-3}});
  EXPECT_GT(tilted.bytes_per_second, 0);
  EXPECT_GE(tilted.fixed_seconds, 0);
  EXPECT_FALSE(fit_cost_model({}).known());
}

}  // namespace
}  // namespace scan::server

namespace scan::server {
namespace {

constexpr double kMiB = 1 << 20;

// A CPU backend and a GPU backend whose models cross at 1 MiB: the CPU streams at 10 GB/s from a
// 5 us fixed cost, the GPU at 40 GB/s after 83.6 us (launches, synchronisation).
struct CpuGpuRouter {
  Router router;
  FakeBackend* cpu = nullptr;
  FakeBackend* gpu = nullptr;

  CpuGpuRouter() {
    auto cpu_backend = std::make_unique<FakeBackend>("cpu-fake", DeviceKind::kCpu);
    auto gpu_backend = std::make_unique<FakeBackend>("cuda:0", DeviceKind::kGpu);
    cpu = cpu_backend.get();
    gpu = gpu_backend.get();
    router.add_backend(std::move(cpu_backend), 2);
    router.add_backend(std::move(gpu_backend), 2);
    router.set_cost_model(0, {5e-6, 10e9});
    router.set_cost_model(1, {5e-6 + 0.75 * kMiB / 10e9, 40e9});
  }
};

TEST(Router, AutoSendsSmallTensorsToTheCpuAndLargeOnesToTheGpu) {
  CpuGpuRouter setup;
  EXPECT_EQ(routed_for_bytes(setup.router, 4096), "cpu-fake");
  EXPECT_EQ(routed_for_bytes(setup.router, 512 * 1024), "cpu-fake");
  EXPECT_EQ(routed_for_bytes(setup.router, 2 << 20), "cuda:0");
  EXPECT_EQ(routed_for_bytes(setup.router, 256 << 20), "cuda:0");
  // Preferences override the models both ways.
  EXPECT_EQ(routed_for_bytes(setup.router, 4096, v1::BACKEND_PREFERENCE_GPU), "cuda:0");
  EXPECT_EQ(routed_for_bytes(setup.router, 256 << 20, v1::BACKEND_PREFERENCE_CPU), "cpu-fake");
}

TEST(Router, GpuMinBytesKeepsSmallerTensorsOnTheCpuWhateverTheModels) {
  CpuGpuRouter setup;
  setup.router.set_cost_model(1, {1e-6, 100e9});  // a GPU model that wins everywhere
  EXPECT_EQ(routed_for_bytes(setup.router, 4096), "cuda:0");
  setup.router.set_policy({std::int64_t{8} << 20});
  EXPECT_EQ(routed_for_bytes(setup.router, 4096), "cpu-fake");
  EXPECT_EQ(routed_for_bytes(setup.router, (8 << 20) - 1), "cpu-fake");
  EXPECT_EQ(routed_for_bytes(setup.router, 8 << 20), "cuda:0");
  // An explicit GPU preference is not subject to the AUTO threshold.
  EXPECT_EQ(routed_for_bytes(setup.router, 4096, v1::BACKEND_PREFERENCE_GPU), "cuda:0");
}

TEST(Router, BacklogMovesAutoRequestsToTheLessLoadedBackend) {
  CpuGpuRouter setup;
  const std::size_t bytes = 16 << 20;
  ASSERT_EQ(routed_for_bytes(setup.router, bytes), "cuda:0");
  {
    // 1 GiB queued on the GPU is 27 ms of backlog; 16 MiB on the idle CPU takes 1.7 ms.
    LoadLease queued(*setup.router.backends()[1].load, std::int64_t{1} << 30);
    EXPECT_EQ(routed_for_bytes(setup.router, bytes), "cpu-fake");
    EXPECT_GT(Router::predicted_completion(setup.router.backends()[1], bytes), 0.027);
    {
      // ...until the CPU is even more loaded.
      LoadLease cpu_queued(*setup.router.backends()[0].load, std::int64_t{512} << 20);
      EXPECT_EQ(routed_for_bytes(setup.router, bytes), "cuda:0");
    }
  }
  // Leases ended: no backlog left, the GPU wins again.
  EXPECT_EQ(setup.router.backends()[1].load->bytes.load(), 0);
  EXPECT_EQ(setup.router.backends()[1].load->requests.load(), 0);
  EXPECT_EQ(routed_for_bytes(setup.router, bytes), "cuda:0");
}

TEST(Router, UnhealthyGpuIsSkippedAndComesBack) {
  CpuGpuRouter setup;
  setup.gpu->set_available(false);
  EXPECT_EQ(routed_for_bytes(setup.router, 256 << 20), "cpu-fake");
  RegisteredBackend* chosen = nullptr;
  const Outcome refused =
      setup.router.route(scan_of_bytes(1 << 20, v1::BACKEND_PREFERENCE_GPU), &chosen);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.reason(), Refusal::kFailedPrecondition);
  EXPECT_NE(refused.message().find("unhealthy"), std::string::npos);
  setup.gpu->set_available(true);
  EXPECT_EQ(routed_for_bytes(setup.router, 256 << 20), "cuda:0");
}

TEST(Router, SeveralGpusTakeTheOneWithTheLeastOutstandingBytes) {
  Router router;
  router.add_backend(std::make_unique<FakeBackend>("cpu-fake", DeviceKind::kCpu), 1);
  router.add_backend(std::make_unique<FakeBackend>("cuda:0", DeviceKind::kGpu), 2);
  router.add_backend(std::make_unique<FakeBackend>("cuda:1", DeviceKind::kGpu), 2);
  router.set_cost_model(0, {5e-6, 1e9});
  router.set_cost_model(1, {50e-6, 40e9});
  router.set_cost_model(2, {50e-6, 40e9});
  EXPECT_EQ(routed_for_bytes(router, 64 << 20), "cuda:0");  // tie: registration order
  LoadLease busy0(*router.backends()[1].load, 32 << 20);
  EXPECT_EQ(routed_for_bytes(router, 64 << 20), "cuda:1");
  EXPECT_EQ(routed_for_bytes(router, 64 << 20, v1::BACKEND_PREFERENCE_GPU), "cuda:1");
  LoadLease busy1(*router.backends()[2].load, 48 << 20);
  EXPECT_EQ(routed_for_bytes(router, 64 << 20, v1::BACKEND_PREFERENCE_GPU), "cuda:0");
}

TEST(Router, FallbackIsTheFirstAvailableCpuBackend) {
  Router router;
  router.add_backend(std::make_unique<FakeBackend>("cuda:0", DeviceKind::kGpu), 1);
  auto first = std::make_unique<FakeBackend>("cpu-first", DeviceKind::kCpu);
  FakeBackend* first_cpu = first.get();
  router.add_backend(std::move(first), 1);
  router.add_backend(std::make_unique<FakeBackend>("cpu-second", DeviceKind::kCpu), 1);
  EXPECT_EQ(router.fallback_for(router.backends()[0])->backend->name(), "cpu-first");
  first_cpu->set_available(false);
  EXPECT_EQ(router.fallback_for(router.backends()[0])->backend->name(), "cpu-second");
}

TEST(Router, GpuWithoutModelWinsOverUnknownCpuButNotOverAKnownOne) {
  Router router;
  router.add_backend(std::make_unique<FakeBackend>("cpu-fake", DeviceKind::kCpu), 1);
  router.add_backend(std::make_unique<FakeBackend>("cuda:0", DeviceKind::kGpu), 1);
  EXPECT_EQ(routed_for_bytes(router, 1024), "cuda:0");
  router.set_cost_model(0, {1e-6, 1e9});
  EXPECT_EQ(routed_for_bytes(router, 1024), "cpu-fake");
}

TEST(CostTracker, ObservationsPullTheModelTowardsWhatIsMeasured) {
  CostTracker tracker;
  // Calibrated: 10 us + 10 GB/s.
  const CostModel calibrated{10e-6, 10e9};
  std::vector<CostSample> samples;
  for (double bytes : {1e3, 1e5, 1e6, 4e6})
    samples.push_back({bytes, calibrated.predict_seconds(bytes)});
  tracker.reset(calibrated, samples, CostSource::kCalibrated);
  EXPECT_EQ(tracker.source(), CostSource::kCalibrated);
  // Serving shows large tensors at half the calibrated throughput (say, a loaded machine).
  const CostModel slower{10e-6, 5e9};
  for (int round = 0; round < 20; ++round) {
    for (double bytes : {1e3, 1e5, 1e6, 4e6, 64e6})
      tracker.observe(bytes, slower.predict_seconds(bytes));
  }
  EXPECT_EQ(tracker.source(), CostSource::kObserved);
  EXPECT_NEAR(tracker.model().bytes_per_second, 5e9, 0.05e9);
  EXPECT_NEAR(tracker.model().fixed_seconds, 10e-6, 1e-6);
}

TEST(CostTracker, PredictionsFollowWhatWasObservedAtThatSizeAndElementWidth) {
  CostTracker tracker;
  const CostModel calibrated{10e-6, 10e9};
  tracker.reset(calibrated, {}, CostSource::kCalibrated);
  EXPECT_DOUBLE_EQ(tracker.predict_seconds(4 * kMiB, 2), calibrated.predict_seconds(4 * kMiB));
  // 16-bit tensors of 4 MiB served in half the modelled time, 32-bit ones at 1.5x.
  for (int round = 0; round < 30; ++round) {
    tracker.observe(4 * kMiB, 0.5 * calibrated.predict_seconds(4 * kMiB), 2);
    tracker.observe(4 * kMiB, 1.5 * calibrated.predict_seconds(4 * kMiB), 4);
  }
  const double narrow = tracker.predict_seconds(4 * kMiB, 2);
  const double wide = tracker.predict_seconds(4 * kMiB, 4);
  EXPECT_NEAR(narrow, 0.5 * calibrated.predict_seconds(4 * kMiB), 1e-6);
  EXPECT_NEAR(wide, 1.5 * calibrated.predict_seconds(4 * kMiB), 1e-6);
  // Within the size bucket, along the model's slope: 5 MiB predicts more than 4 MiB.
  EXPECT_GT(tracker.predict_seconds(5 * kMiB, 2), narrow);
  EXPECT_LT(tracker.predict_seconds(5 * kMiB, 2), 1.5 * narrow);
  // float64 shares the wider class.
  EXPECT_DOUBLE_EQ(tracker.predict_seconds(4 * kMiB, 8), wide);
}

TEST(CostTracker, ASlowFirstObservationDoesNotStick) {
  CostTracker tracker;
  tracker.reset({10e-6, 10e9}, {}, CostSource::kCalibrated);
  // A cold first request at 3x, then the backend's real 100 us: within 10% after five (with a
  // plain EWMA at 0.25 it would still be 147 us).
  tracker.observe(kMiB, 300e-6);
  for (int round = 0; round < 5; ++round) tracker.observe(kMiB, 100e-6);
  EXPECT_LT(tracker.predict_seconds(kMiB), 110e-6);
  // A slow spell moves the estimate up gradually, and it comes back down faster.
  for (int round = 0; round < 2; ++round) tracker.observe(kMiB, 200e-6);
  const double during = tracker.predict_seconds(kMiB);
  EXPECT_GT(during, 130e-6);
  EXPECT_LT(during, 200e-6);
  for (int round = 0; round < 3; ++round) tracker.observe(kMiB, 100e-6);
  EXPECT_LT(tracker.predict_seconds(kMiB), 115e-6);
}

TEST(Router, AutoPicksByWhatEachBackendShowedForThatSizeAndElementWidth) {
  CpuGpuRouter setup;
  const std::size_t bytes = 4 << 20;  // the models say GPU
  auto route = [&](kernels::DType dtype) {
    ValidatedScan scan = scan_of_bytes(bytes, v1::BACKEND_PREFERENCE_AUTO);
    scan.dtype = dtype;
    RegisteredBackend* chosen = nullptr;
    EXPECT_TRUE(setup.router.route(scan, &chosen).ok());
    return chosen->backend->name();
  };
  ASSERT_EQ(route(kernels::DType::kBFloat16), "cuda:0");
  // Serving shows bfloat16 twice as fast per byte on the CPU as its model says, and float32 as
  // modelled: bfloat16 moves to the CPU, float32 stays.
  const double cpu_model = setup.router.cost_model(0).predict_seconds(bytes);
  const double gpu_model = setup.router.cost_model(1).predict_seconds(bytes);
  for (int round = 0; round < 10; ++round) {
    setup.router.observe(0, bytes, 0.2 * cpu_model, 2);
    setup.router.observe(1, bytes, gpu_model, 2);
    setup.router.observe(0, bytes, cpu_model, 4);
    setup.router.observe(1, bytes, gpu_model, 4);
  }
  EXPECT_EQ(route(kernels::DType::kBFloat16), "cpu-fake");
  EXPECT_EQ(route(kernels::DType::kFloat16), "cpu-fake");
  EXPECT_EQ(route(kernels::DType::kFloat32), "cuda:0");
}

TEST(CostTracker, UnobservedSizesKeepTheirCalibrationAnchor) {
  CostTracker tracker;
  const CostModel calibrated{100e-6, 20e9};
  tracker.reset(calibrated,
                {{1e3, calibrated.predict_seconds(1e3)}, {64e6, calibrated.predict_seconds(64e6)}},
                CostSource::kCalibrated);
  // One small request, served at exactly the calibrated speed, must not lose the large anchor.
  tracker.observe(1e3, calibrated.predict_seconds(1e3));
  EXPECT_NEAR(tracker.model().bytes_per_second, 20e9, 0.2e9);
  EXPECT_NEAR(tracker.model().fixed_seconds, 100e-6, 1e-6);
}

TEST(CostTracker, ConfiguredModelsArePinnedAndNonsenseIsIgnored) {
  CostTracker tracker;
  tracker.reset({1e-3, 1e9}, {}, CostSource::kConfigured);
  EXPECT_FALSE(tracker.observe(1e6, 1.0));
  EXPECT_EQ(tracker.model().fixed_seconds, 1e-3);
  EXPECT_EQ(tracker.source(), CostSource::kConfigured);
  CostTracker fresh;
  EXPECT_FALSE(fresh.observe(1e6, 0));
  EXPECT_FALSE(fresh.observe(1e6, -1));
  EXPECT_FALSE(fresh.model().known());
  EXPECT_EQ(fresh.source(), CostSource::kUnknown);
}

// A backend that takes exactly fixed + bytes / throughput of wall time (busy-waiting, so the
// scheduler's sleep granularity does not blur it).
class TimedBackend final : public ScanBackend {
 public:
  TimedBackend(double fixed_seconds, double bytes_per_second)
      : model_{fixed_seconds, bytes_per_second} {}
  const std::string& name() const override { return name_; }
  DeviceKind device_kind() const override { return DeviceKind::kCpu; }
  kernels::KernelStatus run(const ScanJob& job) override {
    const double bytes = static_cast<double>(job.view.numel() * kernels::element_size(job.dtype));
    const auto until = std::chrono::steady_clock::now() +
                       std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                           std::chrono::duration<double>(model_.predict_seconds(bytes)));
    while (std::chrono::steady_clock::now() < until) {
    }
    return kernels::KernelStatus::Ok();
  }

 private:
  std::string name_ = "timed";
  CostModel model_;
};

TEST(Calibration, RecoversTheCostModelOfABackend) {
  TimedBackend backend(200e-6, 2e9);
  // Medians of busy-waits: only preemption on a loaded machine can stretch them, so a machine
  // busy with other work gets three tries; a wrong fit fails all three.
  CalibrationResult result;
  for (int attempt = 0; attempt < 3; ++attempt) {
    result = calibrate(backend);
    ASSERT_EQ(result.samples.size(), cpu_calibration_shapes().size());
    if (std::abs(result.model.bytes_per_second - 2e9) < 0.5e9 &&
        std::abs(result.model.fixed_seconds - 200e-6) < 100e-6) {
      break;
    }
  }
  EXPECT_NEAR(result.model.bytes_per_second, 2e9, 0.5e9);
  EXPECT_NEAR(result.model.fixed_seconds, 200e-6, 100e-6);
}

// Calibration times the memory a backend serves from: every job's tensors lie in ranges adopted
// (e.g. registered with CUDA) before the first run, page-aligned, and released only after the last.
TEST(Calibration, RunsOnAdoptedMemoryAndReleasesItAfterwards) {
  struct Range {
    std::uintptr_t start, end;
    bool released = false;
  };
  std::vector<Range> ranges;
  CalibrationMemory memory;
  memory.adopt = [&ranges](const void* data, std::size_t bytes) {
    const auto start = reinterpret_cast<std::uintptr_t>(data);
    EXPECT_EQ(start % 4096, 0u);
    EXPECT_EQ(bytes % 4096, 0u);
    ranges.push_back({start, start + bytes});
  };
  memory.release = [&ranges](const void* data, std::size_t) {
    for (Range& range : ranges) {
      if (range.start == reinterpret_cast<std::uintptr_t>(data)) range.released = true;
    }
  };
  class CheckingBackend final : public ScanBackend {
   public:
    explicit CheckingBackend(const std::vector<Range>& ranges) : ranges_(ranges) {}
    const std::string& name() const override { return name_; }
    DeviceKind device_kind() const override { return DeviceKind::kGpu; }
    kernels::KernelStatus run(const ScanJob& job) override {
      const auto bytes = static_cast<std::uintptr_t>(job.view.numel()) * sizeof(float);
      for (const void* tensor : {job.input, static_cast<const void*>(job.output)}) {
        const auto start = reinterpret_cast<std::uintptr_t>(tensor);
        const bool adopted = std::any_of(ranges_.begin(), ranges_.end(), [&](const Range& range) {
          return !range.released && range.start <= start && start + bytes <= range.end;
        });
        EXPECT_TRUE(adopted) << "a tensor outside the adopted memory";
      }
      ++runs;
      return kernels::KernelStatus::Ok();
    }
    int runs = 0;

   private:
    const std::vector<Range>& ranges_;
    std::string name_ = "checking";
  } backend(ranges);

  const CalibrationResult result = calibrate(backend, gpu_calibration_shapes(), memory);
  EXPECT_EQ(result.samples.size(), gpu_calibration_shapes().size());
  EXPECT_GT(backend.runs, 0);
  ASSERT_EQ(ranges.size(), 2u) << "input and output";
  EXPECT_TRUE(ranges[0].released && ranges[1].released);
}

}  // namespace
}  // namespace scan::server

namespace scan::server {
namespace {

using std::chrono::milliseconds;

// A process whose CPU clocks the test advances: `process` and `scans` seconds used so far.
struct FakeUsage {
  double process = 0;
  double scans = 0;
  int reads = 0;
  CpuContention::UsageProbe probe() {
    return [this] {
      ++reads;
      return CpuContention::Usage{process, scans};
    };
  }
};

// Feeds `steps` intervals of 20 ms in which the process used `process_cores` cores, `scan_cores`
// of them in scans; returns the last factor.
double feed(CpuContention& contention, FakeUsage& usage, CpuContention::Clock::time_point& now,
            int steps, double process_cores, double scan_cores) {
  double factor = 0;
  for (int step = 0; step < steps; ++step) {
    now += milliseconds(20);
    usage.process += process_cores * 0.020;
    usage.scans += scan_cores * 0.020;
    factor = contention.refresh(now);
  }
  return factor;
}

TEST(CpuContention, CoresBusyOutsideScansStretchCpuTimeAndScansAloneDoNot) {
  FakeUsage usage;
  CpuContention contention(16, usage.probe(), milliseconds(20));
  auto now = CpuContention::Clock::time_point{} + std::chrono::hours(1);
  EXPECT_DOUBLE_EQ(contention.refresh(now), 1.0);  // nothing to compare with yet
  // Sixteen cores busy, all of them scanning (compute-bound, e.g. through shared memory).
  EXPECT_DOUBLE_EQ(feed(contention, usage, now, 50, 16, 16), 1.0);
  // Ten cores of transport beside two of scans: a scan has 6 of 16 cores left.
  EXPECT_NEAR(feed(contention, usage, now, 100, 12, 2), 16.0 / 6, 1e-3);
  // The transport quiets down: the factor follows within about ten intervals.
  const double after_five = feed(contention, usage, now, 5, 2, 2);
  EXPECT_LT(after_five, 16.0 / 6 * 0.8);
  EXPECT_NEAR(feed(contention, usage, now, 100, 2, 2), 1.0, 1e-3);
}

TEST(CpuContention, RefreshesAtMostOncePerIntervalAndForgetsAfterALongSilence) {
  FakeUsage usage;
  CpuContention contention(8, usage.probe(), milliseconds(20));
  auto now = CpuContention::Clock::time_point{} + std::chrono::hours(1);
  contention.refresh(now);
  usage.process += 0.5;  // 50 ms of 7 busy cores... seen at the next refresh only
  contention.refresh(now + milliseconds(5));
  contention.refresh(now + milliseconds(19));
  EXPECT_EQ(usage.reads, 1);
  // More work than the host has cores is clamped: a scan always keeps one core.
  now += milliseconds(20);
  usage.process += 10;
  const double busy = contention.refresh(now);
  EXPECT_EQ(usage.reads, 2);
  EXPECT_GT(busy, 1.0);
  EXPECT_LE(busy, 8.0);
  // A second of silence: the next refresh starts afresh from what that second held (nothing).
  now += std::chrono::seconds(1);
  EXPECT_DOUBLE_EQ(contention.refresh(now), 1.0);
}

TEST(CpuContention, SamplerKeepsTheFactorCurrentWhileAskedAndSleepsAfterwards) {
  // A process in which ten cores' worth of transport and two of scans run all the time.
  const auto started = CpuContention::Clock::now();
  std::atomic<int> reads{0};
  CpuContention contention(
      16,
      [&] {
        ++reads;
        const double elapsed =
            std::chrono::duration<double>(CpuContention::Clock::now() - started).count();
        return CpuContention::Usage{12 * elapsed, 2 * elapsed};
      },
      milliseconds(5));
  contention.start_sampling();
  double factor = contention.current();
  for (int step = 0; step < 200 && factor < 2.0; ++step) {
    std::this_thread::sleep_for(milliseconds(5));
    factor = contention.current();
  }
  EXPECT_GT(factor, 2.0);  // 16 / (16 - 10) = 2.67 once settled
  EXPECT_LT(factor, 2.8);
  // Nobody asks any more: within about a second the sampler stops reading the clocks.
  std::this_thread::sleep_for(std::chrono::milliseconds(1300));
  const int parked_at = reads.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(reads.load(), parked_at);
  // And the next question wakes it.
  contention.current();
  for (int step = 0; step < 100 && reads.load() == parked_at; ++step) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  EXPECT_GT(reads.load(), parked_at);
}

TEST(CpuContention, ProcessProbeSeesThisThreadsWork) {
  double scans = 0;
  const CpuContention::UsageProbe probe = process_usage_probe([&scans] { return scans; });
  const CpuContention::Usage before = probe();
  volatile double sink = 0;
  for (int index = 0; index < 20'000'000; ++index) sink = sink + 1e-9 * index;
  scans = 0.25;
  const CpuContention::Usage after = probe();
  EXPECT_GT(after.process_seconds, before.process_seconds);
  EXPECT_DOUBLE_EQ(after.scans_seconds, 0.25);
}

TEST(Router, AutoSendsWorkToTheGpuWhenTheProcessKeepsTheCoresBusy) {
  Router router;
  router.add_backend(std::make_unique<FakeBackend>("cpu-fake", DeviceKind::kCpu), 1);
  router.add_backend(std::make_unique<FakeBackend>("gpu-fake", DeviceKind::kGpu), 1);
  // 16 MiB: 0.8 ms on the CPU against 1.0 ms on the GPU with every core free.
  const double bytes = 16 << 20;
  router.set_cost_model(0, {0, bytes / 0.8e-3});
  router.set_cost_model(1, {0, bytes / 1.0e-3});
  FakeUsage usage;
  auto contention = std::make_shared<CpuContention>(16, usage.probe(), milliseconds(0));
  router.set_cpu_contention(contention);
  EXPECT_EQ(routed_for_bytes(router, 16 << 20), "cpu-fake");
  // The transport keeps eight of sixteen cores busy: the CPU scan would take 1.6 ms.
  auto now = CpuContention::Clock::now();
  feed(*contention, usage, now, 100, 9, 1);
  EXPECT_EQ(routed_for_bytes(router, 16 << 20), "gpu-fake");
  // Explicit preferences are not priced.
  EXPECT_EQ(routed_for_bytes(router, 16 << 20, v1::BACKEND_PREFERENCE_CPU), "cpu-fake");
}

}  // namespace
}  // namespace scan::server

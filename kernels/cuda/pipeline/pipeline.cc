// CudaPipeline: lanes of streams and buffers, and the copy-in / scan / copy-out ring over a job's
// pieces (cuda_pipeline.h).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "cuda_status.h"
#include "pipeline/keep_awake.h"
#include "pipeline/staging_copy.h"
#include "scan/kernels/chunk_plan.h"
#include "scan/kernels/cuda_chunk_carry.h"
#include "scan/kernels/cuda_cumprod.h"
#include "scan/kernels/cuda_pipeline.h"
#include "scan/kernels/reference.h"
#include "scan/kernels/thread_pool.h"

namespace scan::kernels {
namespace {

struct Slot {
  cudaStream_t stream = nullptr;
  void* pinned = nullptr;
  void* device = nullptr;
  double* work = nullptr;
  cudaEvent_t h2d_start = nullptr, h2d_end = nullptr, d2h_start = nullptr, d2h_end = nullptr,
              carry_done = nullptr;
};

struct Lane {
  std::vector<Slot> slots;
  double* carry[2] = {nullptr, nullptr};
};

}  // namespace

struct CudaPipeline::Impl {
  Impl(int device_ordinal, const CudaPipelineOptions& pipeline_options)
      : ordinal(device_ordinal),
        options(pipeline_options),
        copy_pool(std::max(0, pipeline_options.copy_threads - 1)),
        keep_awake_window(window_ticks(pipeline_options.keep_awake_seconds)),
        last_gpu_work(now_ticks()) {}

  ~Impl() {
    // Stopped before any stream goes: its launches name the device, which must stay set up.
    if (keep_awake_thread.joinable()) {
      {
        std::lock_guard<std::mutex> lock(keep_awake_mutex);
        keep_awake_stopping = true;
      }
      keep_awake_changed.notify_one();
      keep_awake_thread.join();
    }
    cudaSetDevice(ordinal);
    // Not synchronised: destroying a stream with an empty kernel still queued is allowed, and
    // waiting for it could mean waiting behind request work.
    if (keep_awake_stream != nullptr) cudaStreamDestroy(keep_awake_stream);
    for (auto& lane : lanes) {
      for (Slot& slot : lane->slots) {
        if (slot.stream != nullptr) cudaStreamSynchronize(slot.stream);
        for (cudaEvent_t event :
             {slot.h2d_start, slot.h2d_end, slot.d2h_start, slot.d2h_end, slot.carry_done}) {
          if (event != nullptr) cudaEventDestroy(event);
        }
        if (slot.stream != nullptr) cudaStreamDestroy(slot.stream);
        if (slot.pinned != nullptr) cudaFreeHost(slot.pinned);
        if (slot.device != nullptr) cudaFree(slot.device);
        if (slot.work != nullptr) cudaFree(slot.work);
      }
      for (double* carry : lane->carry) {
        if (carry != nullptr) cudaFree(carry);
      }
    }
  }

  KernelStatus allocate() {
    SCAN_CUDA_TRY("cudaSetDevice", cudaSetDevice(ordinal));
    const std::int64_t chunk = options.chunk_bytes;
    // Pieces that carry are scanned in float64: four times a 16-bit piece's bytes. A carry holds
    // one double per column of a piece: at most chunk / 2 columns (16-bit elements).
    const std::int64_t work_bytes = 4 * chunk;
    const std::int64_t carry_bytes = chunk / 2 * static_cast<std::int64_t>(sizeof(double));
    for (int index = 0; index < std::max(1, options.lanes); ++index) {
      auto lane = std::make_unique<Lane>();
      lane->slots.resize(static_cast<std::size_t>(std::max(2, options.slots_per_lane)));
      for (Slot& slot : lane->slots) {
        SCAN_CUDA_TRY("cudaStreamCreate",
                      cudaStreamCreateWithFlags(&slot.stream, cudaStreamNonBlocking));
        for (cudaEvent_t* event :
             {&slot.h2d_start, &slot.h2d_end, &slot.d2h_start, &slot.d2h_end, &slot.carry_done}) {
          SCAN_CUDA_TRY("cudaEventCreate", cudaEventCreate(event));
        }
        SCAN_CUDA_TRY("cudaHostAlloc", cudaHostAlloc(&slot.pinned, chunk, cudaHostAllocDefault));
        SCAN_CUDA_TRY("cudaMalloc", cudaMalloc(&slot.device, chunk));
        SCAN_CUDA_TRY("cudaMalloc", cudaMalloc(reinterpret_cast<void**>(&slot.work), work_bytes));
        device_bytes += chunk + work_bytes;
        pinned_bytes += chunk;
      }
      for (double*& carry : lane->carry) {
        SCAN_CUDA_TRY("cudaMalloc", cudaMalloc(reinterpret_cast<void**>(&carry), carry_bytes));
        device_bytes += carry_bytes;
      }
      free_lanes.push_back(lane.get());
      lanes.push_back(std::move(lane));
    }
    if (keep_awake_window > 0) {
      // The lowest priority (the numerically greatest value), so that the empty kernel never goes
      // in front of request work. The lanes' streams have the default priority, which is that same
      // lowest one, so the two tie: what keeps the cost to requests small is that the kernel is
      // one thread for microseconds, and that there is never more than one of it queued.
      int lowest = 0, highest = 0;
      SCAN_CUDA_TRY("cudaDeviceGetStreamPriorityRange",
                    cudaDeviceGetStreamPriorityRange(&lowest, &highest));
      SCAN_CUDA_TRY(
          "cudaStreamCreateWithPriority",
          cudaStreamCreateWithPriority(&keep_awake_stream, cudaStreamNonBlocking, lowest));
      keep_awake_thread = std::thread([this] { keep_awake(); });
    }
    return KernelStatus::Ok();
  }

  static std::int64_t now_ticks() {
    return std::chrono::steady_clock::now().time_since_epoch().count();
  }

  // 0 (off) for a non-positive or NaN window; a window beyond a year is as good as forever.
  static std::int64_t window_ticks(double seconds) {
    if (!(seconds > 0)) return 0;
    return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
               std::chrono::duration<double>(std::min(seconds, 365 * 86400.0)))
        .count();
  }

  bool keep_awake_window_open() const {
    return now_ticks() - last_gpu_work.load() < keep_awake_window;
  }

  // Opens (or extends) the keep-awake window. Takes the mutex only when the thread is parked, so a
  // job in an open window costs one atomic store and load. Both are sequentially consistent, as
  // is the thread's store of `parked` before it reads `last_gpu_work`: either this sees the thread
  // parked and wakes it (the mutex, held by the thread until it waits, keeps the notification from
  // coming too early), or the thread sees this job's time and does not park.
  void note_gpu_work() {
    if (keep_awake_window == 0) return;
    last_gpu_work.store(now_ticks());
    if (keep_awake_parked.load()) {
      { std::lock_guard<std::mutex> lock(keep_awake_mutex); }
      keep_awake_changed.notify_one();
    }
  }

  void keep_awake() {
    // Errors are ignored throughout: keeping the device awake is a hint, and a device that fails
    // shows it to the next job. This thread's own launch results are all it looks at, never
    // cudaGetLastError (whose state belongs to each host thread anyway).
    cudaSetDevice(ordinal);
    constexpr auto kInterval = std::chrono::milliseconds(10);
    std::unique_lock<std::mutex> lock(keep_awake_mutex);
    while (!keep_awake_stopping) {
      if (!keep_awake_window_open()) {
        // Parked before the predicate's first look at the time (note_gpu_work relies on it).
        keep_awake_parked.store(true);
        keep_awake_changed.wait(lock,
                                [this] { return keep_awake_stopping || keep_awake_window_open(); });
        keep_awake_parked.store(false);
        continue;
      }
      // The previous empty kernel still queued means the device is busy (awake) with request
      // work: no second one, so that the stream's queue stays at one kernel and a launch never
      // blocks. cudaStreamQuery asks about this stream alone and does not wait.
      if (cudaStreamQuery(keep_awake_stream) != cudaErrorNotReady) {
        cuda_detail::launch_keep_awake(keep_awake_stream);
      }
      keep_awake_changed.wait_for(lock, kInterval, [this] { return keep_awake_stopping; });
    }
  }

  Lane& acquire_lane() {
    std::unique_lock<std::mutex> lock(lanes_mutex);
    lane_free.wait(lock, [this] { return !free_lanes.empty(); });
    Lane* lane = free_lanes.back();
    free_lanes.pop_back();
    return *lane;
  }

  void release_lane(Lane& lane) {
    {
      std::lock_guard<std::mutex> lock(lanes_mutex);
      free_lanes.push_back(&lane);
    }
    lane_free.notify_one();
  }

  // `piece_elements` 0: as many as a staging buffer holds.
  KernelStatus run_on_lane(Lane& lane, const CudaPipelineJob& job, CudaTransferTimes* times,
                           std::int64_t piece_elements = 0) {
    SCAN_CUDA_TRY("cudaSetDevice", cudaSetDevice(ordinal));
    // Input or output in registered memory: DMA straight from / into it. The leases keep the
    // ranges registered until nothing of this job runs any more (they end after the syncs below).
    const std::size_t bytes = static_cast<std::size_t>(job.shape.numel()) * element_size(job.dtype);
    CudaHostRegistry* registry = options.host_registry.get();
    const CudaHostRegistry::Lease direct_in =
        registry != nullptr ? registry->hold(job.input, bytes) : CudaHostRegistry::Lease();
    const CudaHostRegistry::Lease direct_out =
        registry != nullptr ? registry->hold(job.output, bytes) : CudaHostRegistry::Lease();
    KernelStatus status =
        stream_pieces(lane, job, times, piece_elements, direct_in.held(), direct_out.held());
    if (!status.ok()) {
      // Nothing of this job may still be running when the lane serves the next one.
      for (Slot& slot : lane.slots) cudaStreamSynchronize(slot.stream);
      cudaGetLastError();  // clears a non-sticky error; a sticky one keeps failing jobs
    }
    return status;
  }

  // `direct_in` / `direct_out`: the job's input / output is registered memory, copied by DMA
  // without the staging buffer.
  KernelStatus stream_pieces(Lane& lane, const CudaPipelineJob& job, CudaTransferTimes* times,
                             std::int64_t piece_elements, bool direct_in, bool direct_out) {
    const DType dtype = job.dtype;
    const std::size_t element = element_size(dtype);
    const std::int64_t capacity = options.chunk_bytes / static_cast<std::int64_t>(element);
    const std::vector<ChunkPiece> pieces =
        plan_chunks(job.shape, piece_elements > 0 ? std::min(piece_elements, capacity) : capacity);
    const std::size_t ring = lane.slots.size();
    const auto* input = static_cast<const char*>(job.input);
    auto* output = static_cast<char*>(job.output);
    float to_device_ms = 0, to_host_ms = 0;
    cudaEvent_t last_carry = nullptr;

    // Waits for piece `index` to be back in its staging buffer and copies it into the output.
    auto drain = [&](std::size_t index) -> KernelStatus {
      const ChunkPiece& piece = pieces[index];
      Slot& slot = lane.slots[index % ring];
      SCAN_CUDA_TRY("cudaEventSynchronize", cudaEventSynchronize(slot.d2h_end));
      float milliseconds = 0;
      SCAN_CUDA_TRY("cudaEventElapsedTime",
                    cudaEventElapsedTime(&milliseconds, slot.h2d_start, slot.h2d_end));
      to_device_ms += milliseconds;
      SCAN_CUDA_TRY("cudaEventElapsedTime",
                    cudaEventElapsedTime(&milliseconds, slot.d2h_start, slot.d2h_end));
      to_host_ms += milliseconds;
      if (!direct_out) {
        cuda_detail::staging_copy(copy_pool, output + piece.offset * element, slot.pinned,
                                  static_cast<std::size_t>(piece.numel()) * element,
                                  options.streaming_copies);
      }
      return KernelStatus::Ok();
    };

    for (std::size_t index = 0; index < pieces.size(); ++index) {
      const ChunkPiece& piece = pieces[index];
      Slot& slot = lane.slots[index % ring];
      if (index >= ring) SCAN_KERNEL_TRY(drain(index - ring));
      const std::size_t bytes = static_cast<std::size_t>(piece.numel()) * element;
      const char* from = input + piece.offset * element;
      if (!direct_in) {
        cuda_detail::staging_copy(copy_pool, slot.pinned, from, bytes, options.streaming_copies);
        from = static_cast<const char*>(slot.pinned);
      }

      cudaStream_t stream = slot.stream;
      SCAN_CUDA_TRY("cudaEventRecord", cudaEventRecord(slot.h2d_start, stream));
      SCAN_CUDA_TRY("cudaMemcpyAsync (to device)",
                    cudaMemcpyAsync(slot.device, from, bytes, cudaMemcpyHostToDevice, stream));
      SCAN_CUDA_TRY("cudaEventRecord", cudaEventRecord(slot.h2d_end, stream));
      if (!piece.needs_carry()) {
        SCAN_KERNEL_TRY(cuda_cumprod(slot.device, slot.device, piece.shape, dtype, stream));
      } else {
        double* scanned = static_cast<double*>(slot.device);
        if (dtype != DType::kFloat64) {
          SCAN_KERNEL_TRY(cuda_widen_to_f64(slot.device, dtype, slot.work, piece.numel(), stream));
          scanned = slot.work;
        }
        SCAN_KERNEL_TRY(cuda_cumprod(scanned, scanned, piece.shape, DType::kFloat64, stream));
        // Carry passes run in plan order: each reads the carry the previous one wrote.
        if (last_carry != nullptr) {
          SCAN_CUDA_TRY("cudaStreamWaitEvent", cudaStreamWaitEvent(stream, last_carry, 0));
        }
        SCAN_KERNEL_TRY(
            cuda_apply_carry(scanned, slot.device, dtype, piece.shape.length, piece.shape.inner,
                             piece.carry_in ? lane.carry[piece.parity] : nullptr,
                             piece.carry_out ? lane.carry[1 - piece.parity] : nullptr, stream));
        SCAN_CUDA_TRY("cudaEventRecord", cudaEventRecord(slot.carry_done, stream));
        last_carry = slot.carry_done;
      }
      SCAN_CUDA_TRY("cudaEventRecord", cudaEventRecord(slot.d2h_start, stream));
      void* to = direct_out ? static_cast<void*>(output + piece.offset * element) : slot.pinned;
      SCAN_CUDA_TRY("cudaMemcpyAsync (to host)",
                    cudaMemcpyAsync(to, slot.device, bytes, cudaMemcpyDeviceToHost, stream));
      SCAN_CUDA_TRY("cudaEventRecord", cudaEventRecord(slot.d2h_end, stream));
    }
    const std::size_t first_undrained = pieces.size() > ring ? pieces.size() - ring : 0;
    for (std::size_t index = first_undrained; index < pieces.size(); ++index) {
      SCAN_KERNEL_TRY(drain(index));
    }
    if (times != nullptr) {
      times->host_to_device_seconds = to_device_ms * 1e-3;
      times->device_to_host_seconds = to_host_ms * 1e-3;
    }
    return KernelStatus::Ok();
  }

  KernelStatus self_test() {
    struct Case {
      DType dtype;
      ScanShape shape;
      std::int64_t piece_elements;
    };
    const Case cases[] = {{DType::kFloat32, {3, 257, 5}, 0},
                          {DType::kFloat32, {2, 300, 7}, 64},
                          {DType::kBFloat16, {2, 100, 33}, 200},
                          {DType::kFloat16, {1, 9, 50}, 16}};
    Lane& lane = acquire_lane();
    KernelStatus status;
    for (const Case& each : cases) {
      const std::int64_t count = each.shape.numel();
      std::vector<double> values(static_cast<std::size_t>(count));
      for (std::int64_t index = 0; index < count; ++index) {
        values[static_cast<std::size_t>(index)] = 0.95 + 0.05 * static_cast<double>(index % 7) / 7;
      }
      const std::size_t bytes = static_cast<std::size_t>(count) * element_size(each.dtype);
      std::vector<char> input(bytes), output(bytes);
      narrow_from_f64(values.data(), count, each.dtype, input.data());
      const std::vector<double> stored = widen_to_f64(input.data(), each.dtype, count);
      std::vector<double> expected(stored.size());
      reference_cumprod(stored.data(), expected.data(), each.shape);
      status = run_on_lane(lane, {each.dtype, each.shape, input.data(), output.data()}, nullptr,
                           each.piece_elements);
      if (!status.ok()) break;
      const Comparison comparison =
          compare_to_reference(expected.data(), output.data(), each.dtype, count,
                               cumprod_tolerance(each.dtype, each.shape.length));
      if (!comparison.ok()) {
        status = {KernelStatus::Code::kDeviceError,
                  "cuda:" + std::to_string(ordinal) + ": self-test scan gave " +
                      std::to_string(comparison.mismatches) + " wrong elements"};
        break;
      }
    }
    release_lane(lane);
    note_gpu_work();
    return status;
  }

  const int ordinal;
  const CudaPipelineOptions options;
  ThreadPool copy_pool;
  std::int64_t device_bytes = 0;
  std::int64_t pinned_bytes = 0;

  std::vector<std::unique_ptr<Lane>> lanes;
  std::mutex lanes_mutex;
  std::condition_variable lane_free;
  std::vector<Lane*> free_lanes;

  // The keep-awake window (CudaPipelineOptions::keep_awake_seconds), in steady_clock ticks: 0 off.
  const std::int64_t keep_awake_window;
  // steady_clock ticks when the last job or self-test ended (at first: when the pipeline was made)
  std::atomic<std::int64_t> last_gpu_work;
  std::atomic<bool> keep_awake_parked{false};
  cudaStream_t keep_awake_stream = nullptr;
  std::mutex keep_awake_mutex;
  std::condition_variable keep_awake_changed;
  bool keep_awake_stopping = false;  // under keep_awake_mutex
  std::thread keep_awake_thread;
};

CudaPipeline::CudaPipeline(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaPipeline::~CudaPipeline() = default;

std::unique_ptr<CudaPipeline> CudaPipeline::create(int ordinal, const CudaPipelineOptions& options,
                                                   KernelStatus* status) {
  auto impl = std::make_unique<Impl>(ordinal, options);
  *status = impl->allocate();
  // First use of the kernels allocates their workspace pool and loads the modules: done now, and
  // checked, rather than on the first job.
  if (status->ok()) *status = impl->self_test();
  if (!status->ok()) return nullptr;
  return std::unique_ptr<CudaPipeline>(new CudaPipeline(std::move(impl)));
}

KernelStatus CudaPipeline::run_on_device(const CudaPipelineJob& job) {
  if (job.shape.numel() == 0) return KernelStatus::Ok();
  Lane& lane = impl_->acquire_lane();
  KernelStatus status = [&]() -> KernelStatus {
    SCAN_CUDA_TRY("cudaSetDevice", cudaSetDevice(impl_->ordinal));
    cudaStream_t stream = lane.slots.front().stream;
    SCAN_KERNEL_TRY(cuda_cumprod(job.input, job.output, job.shape, job.dtype, stream));
    SCAN_CUDA_TRY("cudaStreamSynchronize", cudaStreamSynchronize(stream));
    return KernelStatus::Ok();
  }();
  if (!status.ok()) cudaGetLastError();
  impl_->release_lane(lane);
  impl_->note_gpu_work();
  return status;
}

KernelStatus CudaPipeline::run(const CudaPipelineJob& job, CudaTransferTimes* times) {
  if (job.shape.numel() == 0) return KernelStatus::Ok();
  Lane& lane = impl_->acquire_lane();
  KernelStatus status = impl_->run_on_lane(lane, job, times);
  impl_->release_lane(lane);
  impl_->note_gpu_work();
  return status;
}

KernelStatus CudaPipeline::self_test() { return impl_->self_test(); }
int CudaPipeline::lanes() const { return static_cast<int>(impl_->lanes.size()); }
int CudaPipeline::slots_per_lane() const {
  return static_cast<int>(impl_->lanes.front()->slots.size());
}
std::int64_t CudaPipeline::device_bytes() const { return impl_->device_bytes; }
std::int64_t CudaPipeline::pinned_bytes() const { return impl_->pinned_bytes; }

}  // namespace scan::kernels

#include "backends/cuda_backend.h"

#include <cuda_runtime_api.h>
#if defined(__x86_64__)
#include <emmintrin.h>
#endif
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <iterator>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "backends/chunk_plan.h"
#include "backends/device_health.h"
#include "scan/kernels/cuda_chunk_carry.h"
#include "scan/kernels/cuda_cumprod.h"
#include "scan/kernels/reference.h"
#include "scan/kernels/thread_pool.h"

namespace scan::server {
namespace {

using kernels::DType;
using kernels::KernelStatus;

KernelStatus cuda_failure(const std::string& what, cudaError_t error) {
  return {KernelStatus::Code::kDeviceError,
          what + ": " + cudaGetErrorName(error) + " (" + cudaGetErrorString(error) + ")"};
}

#define SCAN_CUDA_CHECK(what, call)                                           \
  do {                                                                        \
    if (const cudaError_t scan_error_ = (call); scan_error_ != cudaSuccess) { \
      return cuda_failure(what, scan_error_);                                 \
    }                                                                         \
  } while (false)

#define SCAN_KERNEL_CHECK(call)                                   \
  do {                                                            \
    if (KernelStatus scan_status_ = (call); !scan_status_.ok()) { \
      return scan_status_;                                        \
    }                                                             \
  } while (false)

constexpr int kMinComputeCapability = 8;

// CudaHostRegistry: ranges by start address; a background thread registers queued ones.
class HostRegistry final : public CudaHostRegistry {
 public:
  // Keeps a registered range registered while a job copies from or into it.
  class Lease {
   public:
    Lease() = default;
    Lease(HostRegistry* registry, std::uintptr_t key) : registry_(registry), key_(key) {}
    Lease(Lease&& other) noexcept : registry_(other.registry_), key_(other.key_) {
      other.registry_ = nullptr;
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (registry_ != nullptr) registry_->release(key_);
    }
    bool held() const { return registry_ != nullptr; }

   private:
    HostRegistry* registry_ = nullptr;
    std::uintptr_t key_ = 0;
  };

  ~HostRegistry() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    if (worker_.joinable()) worker_.join();
    // Normally empty: pools unregister their buffers before they free them.
    for (const auto& [key, entry] : entries_) {
      if (entry.state == State::kRegistered) cudaHostUnregister(reinterpret_cast<void*>(key));
    }
    cudaGetLastError();
  }

  void register_async(const void* data, std::size_t bytes) override {
    if (data == nullptr || bytes == 0) return;
    const auto key = reinterpret_cast<std::uintptr_t>(data);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_ || !entries_.emplace(key, Entry{bytes}).second) return;
      queue_.push_back(key);
      if (!worker_.joinable()) worker_ = std::thread([this] { work(); });
    }
    changed_.notify_all();
  }

  void unregister(const void* data, std::size_t bytes) override {
    const auto key = reinterpret_cast<std::uintptr_t>(data);
    std::unique_lock<std::mutex> lock(mutex_);
    auto found = entries_.find(key);
    if (found == entries_.end()) return;
    changed_.wait(lock, [&] {
      found = entries_.find(key);
      return found == entries_.end() ||
             (found->second.state != State::kRegistering &&
              found->second.state != State::kLeaving && found->second.users == 0);
    });
    if (found == entries_.end()) return;
    if (found->second.state != State::kRegistered) {
      entries_.erase(found);  // queued (the worker skips it) or failed
      changed_.notify_all();
      return;
    }
    found->second.state = State::kLeaving;  // no new leases
    bytes = found->second.bytes;
    lock.unlock();
    const cudaError_t error = cudaHostUnregister(const_cast<void*>(data));
    if (error != cudaSuccess) cudaGetLastError();
    lock.lock();
    registered_bytes_ -= static_cast<std::int64_t>(bytes);
    entries_.erase(key);
    const std::int64_t registered = registered_bytes_;
    lock.unlock();
    changed_.notify_all();
    spdlog::debug("unregistered a pooled buffer of {:.1f} MiB ({:.1f} MiB registered for DMA)",
                  static_cast<double>(bytes) / (1 << 20),
                  static_cast<double>(registered) / (1 << 20));
  }

  std::int64_t registered_bytes() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return registered_bytes_;
  }
  std::int64_t direct_transfers() const override { return direct_transfers_.load(); }

  void wait_idle() override {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [this] { return queue_.empty() && registering_ == 0; });
  }

  // A lease on the registered range holding [data, data + bytes), or none (staging path).
  Lease hold(const void* data, std::size_t bytes) {
    const auto start = reinterpret_cast<std::uintptr_t>(data);
    std::lock_guard<std::mutex> lock(mutex_);
    auto next = entries_.upper_bound(start);
    if (next == entries_.begin()) return {};
    auto& [key, entry] = *std::prev(next);
    if (entry.state != State::kRegistered || start + bytes > key + entry.bytes) return {};
    ++entry.users;
    direct_transfers_.fetch_add(1);
    return {this, key};
  }

 private:
  enum class State { kQueued, kRegistering, kRegistered, kFailed, kLeaving };
  struct Entry {
    std::size_t bytes = 0;
    State state = State::kQueued;
    int users = 0;
  };

  void release(std::uintptr_t key) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto found = entries_.find(key);
      if (found != entries_.end()) --found->second.users;
    }
    changed_.notify_all();
  }

  void work() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (true) {
      changed_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      const std::uintptr_t key = queue_.front();
      queue_.pop_front();
      auto found = entries_.find(key);
      if (found == entries_.end() || found->second.state != State::kQueued) continue;
      found->second.state = State::kRegistering;
      const std::size_t bytes = found->second.bytes;
      ++registering_;
      lock.unlock();
      const auto started = std::chrono::steady_clock::now();
      const cudaError_t error =
          cudaHostRegister(reinterpret_cast<void*>(key), bytes, cudaHostRegisterPortable);
      const double milliseconds =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started)
              .count();
      if (error != cudaSuccess) cudaGetLastError();
      lock.lock();
      --registering_;
      // Only unregister() removes an entry, and it waits while the entry is being registered.
      found = entries_.find(key);
      found->second.state = error == cudaSuccess ? State::kRegistered : State::kFailed;
      if (error == cudaSuccess) registered_bytes_ += static_cast<std::int64_t>(bytes);
      const std::int64_t registered = registered_bytes_;
      lock.unlock();
      changed_.notify_all();
      // The server's pool registers buffers of 1 MiB and more, a few times per size.
      const auto level =
          bytes >= (std::size_t{1} << 20) ? spdlog::level::info : spdlog::level::debug;
      if (error == cudaSuccess) {
        spdlog::log(level,
                    "registered a pooled buffer of {:.1f} MiB for DMA in {:.1f} ms ({:.1f} MiB "
                    "registered)",
                    static_cast<double>(bytes) / (1 << 20), milliseconds,
                    static_cast<double>(registered) / (1 << 20));
      } else {
        spdlog::log(level, "cannot register a pooled buffer of {:.1f} MiB for DMA ({}): staged",
                    static_cast<double>(bytes) / (1 << 20), cudaGetErrorName(error));
      }
      lock.lock();
    }
  }

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::uintptr_t, Entry> entries_;
  std::deque<std::uintptr_t> queue_;
  int registering_ = 0;
  std::int64_t registered_bytes_ = 0;
  std::atomic<std::int64_t> direct_transfers_{0};
  bool stopping_ = false;
  std::thread worker_;
};

class CudaBackend final : public ScanBackend {
 public:
  CudaBackend(int ordinal, const CudaBackendOptions& options)
      : name_("cuda:" + std::to_string(ordinal)),
        ordinal_(ordinal),
        options_(options),
        copy_pool_(std::max(0, options.copy_threads - 1)),
        health_(options.max_consecutive_errors,
                std::chrono::duration_cast<DeviceHealth::Clock::duration>(
                    std::chrono::duration<double>(options.probe_interval_seconds))),
        injected_failures_(options.injected_failures),
        registry_(static_cast<HostRegistry*>(options.host_registry.get())) {}

  ~CudaBackend() override {
    {
      std::lock_guard<std::mutex> lock(prober_mutex_);
      stopping_ = true;
    }
    prober_wake_.notify_all();
    if (prober_.joinable()) prober_.join();
    cudaSetDevice(ordinal_);
    for (auto& lane : lanes_) {
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

  KernelStatus init() {
    SCAN_CUDA_CHECK("cudaSetDevice", cudaSetDevice(ordinal_));
    const std::int64_t chunk = options_.chunk_bytes;
    // 16-bit pieces that carry are scanned in float32: twice the elements' bytes. A carry holds
    // one double per column of a piece: at most chunk / 2 columns (16-bit elements).
    const std::int64_t work_bytes = 2 * chunk;
    const std::int64_t carry_bytes = chunk / 2 * static_cast<std::int64_t>(sizeof(double));
    for (int index = 0; index < std::max(1, options_.lanes); ++index) {
      auto lane = std::make_unique<Lane>();
      lane->slots.resize(static_cast<std::size_t>(std::max(2, options_.slots_per_lane)));
      for (Slot& slot : lane->slots) {
        SCAN_CUDA_CHECK("cudaStreamCreate",
                        cudaStreamCreateWithFlags(&slot.stream, cudaStreamNonBlocking));
        for (cudaEvent_t* event :
             {&slot.h2d_start, &slot.h2d_end, &slot.d2h_start, &slot.d2h_end, &slot.carry_done}) {
          SCAN_CUDA_CHECK("cudaEventCreate", cudaEventCreate(event));
        }
        SCAN_CUDA_CHECK("cudaHostAlloc", cudaHostAlloc(&slot.pinned, chunk, cudaHostAllocDefault));
        SCAN_CUDA_CHECK("cudaMalloc", cudaMalloc(&slot.device, chunk));
        SCAN_CUDA_CHECK("cudaMalloc", cudaMalloc(reinterpret_cast<void**>(&slot.work), work_bytes));
        device_bytes_ += chunk + work_bytes;
        pinned_bytes_ += chunk;
      }
      for (double*& carry : lane->carry) {
        SCAN_CUDA_CHECK("cudaMalloc", cudaMalloc(reinterpret_cast<void**>(&carry), carry_bytes));
        device_bytes_ += carry_bytes;
      }
      free_lanes_.push_back(lane.get());
      lanes_.push_back(std::move(lane));
    }
    // First use of the kernels allocates their workspace pool and loads the modules: done now,
    // and checked, rather than on the first request.
    if (KernelStatus status = probe(); !status.ok()) return status;
    prober_ = std::thread([this] { probe_loop(); });
    spdlog::info("{}: {} lanes x {} slots of {} MiB: {} MiB device memory, {} MiB pinned", name_,
                 lanes_.size(), lanes_.front()->slots.size(), options_.chunk_bytes >> 20,
                 device_bytes_ >> 20, pinned_bytes_ >> 20);
    return KernelStatus::Ok();
  }

  const std::string& name() const override { return name_; }
  DeviceKind device_kind() const override { return DeviceKind::kGpu; }
  bool available() const override { return health_.healthy(); }
  std::int64_t device_memory_bytes() const override { return device_bytes_; }
  void on_availability_change(std::function<void(bool)> callback) override {
    std::lock_guard<std::mutex> lock(callback_mutex_);
    on_change_ = std::move(callback);
  }

  KernelStatus run(const ScanJob& job) override {
    if (job.view.numel() == 0) return KernelStatus::Ok();
    KernelStatus status;
    int injected = injected_failures_.load();
    while (injected > 0 && !injected_failures_.compare_exchange_weak(injected, injected - 1)) {
    }
    if (injected > 0) {
      status = {KernelStatus::Code::kDeviceError, name_ + ": injected failure (test)"};
    } else {
      Lane& lane = acquire_lane();
      status = run_on_lane(lane, job);
      release_lane(lane);
    }
    if (status.ok()) {
      health_.record_success();
    } else if (status.code() == KernelStatus::Code::kDeviceError &&
               health_.record_error(DeviceHealth::Clock::now())) {
      spdlog::error(
          "{}: marked unhealthy after {} consecutive errors (last: {}); probing every {} s", name_,
          options_.max_consecutive_errors, status.message(), options_.probe_interval_seconds);
      notify(false);
    }
    return status;
  }

 private:
  struct Slot {
    cudaStream_t stream = nullptr;
    void* pinned = nullptr;
    void* device = nullptr;
    float* work = nullptr;
    cudaEvent_t h2d_start = nullptr, h2d_end = nullptr, d2h_start = nullptr, d2h_end = nullptr,
                carry_done = nullptr;
  };
  struct Lane {
    std::vector<Slot> slots;
    double* carry[2] = {nullptr, nullptr};
  };

  Lane& acquire_lane() {
    std::unique_lock<std::mutex> lock(lanes_mutex_);
    lane_free_.wait(lock, [this] { return !free_lanes_.empty(); });
    Lane* lane = free_lanes_.back();
    free_lanes_.pop_back();
    return *lane;
  }

  void release_lane(Lane& lane) {
    {
      std::lock_guard<std::mutex> lock(lanes_mutex_);
      free_lanes_.push_back(&lane);
    }
    lane_free_.notify_one();
  }

  void notify(bool up) {
    std::lock_guard<std::mutex> lock(callback_mutex_);
    if (on_change_) on_change_(up);
  }

  // Copies on the copy pool in page-aligned parts: one thread moves ~10 GB/s, the PCIe link
  // ~50 GB/s each way, and these copies are what bounds the pipeline.
  void parallel_copy(void* destination, const void* source, std::size_t bytes) {
    constexpr std::size_t kMinPart = std::size_t{256} << 10;
    const auto parts = static_cast<int>(std::clamp<std::size_t>(
        bytes / kMinPart, 1, static_cast<std::size_t>(copy_pool_.max_parallelism())));
    const bool streaming = options_.streaming_copies;
    if (parts == 1) {
      copy_part(destination, source, bytes, streaming);
      return;
    }
    const std::size_t part = ((bytes + parts - 1) / parts + 4095) & ~std::size_t{4095};
    copy_pool_.parallel_for(parts, parts, [&](std::int64_t index) {
      const std::size_t start = static_cast<std::size_t>(index) * part;
      if (start >= bytes) return;
      copy_part(static_cast<char*>(destination) + start, static_cast<const char*>(source) + start,
                std::min(part, bytes - start), streaming);
    });
  }

  // Non-temporal (streaming) stores write whole lines without first reading them into the cache,
  // so a copy far larger than the cache moves 2 bytes of memory traffic per byte instead of 3; the
  // data is read next by the DMA engine or the socket, never soon from this core's cache. The
  // fence makes the weakly ordered stores visible before the pool reports the part done.
  static void copy_part(void* destination, const void* source, std::size_t bytes, bool streaming) {
#if defined(__x86_64__)
    auto* out = static_cast<char*>(destination);
    const auto* in = static_cast<const char*>(source);
    const std::size_t head = (16 - (reinterpret_cast<std::uintptr_t>(out) & 15)) & 15;
    if (streaming && bytes >= head + 4096) {
      std::memcpy(out, in, head);
      out += head;
      in += head;
      bytes -= head;
      const std::size_t body = bytes & ~std::size_t{63};
      for (std::size_t offset = 0; offset < body; offset += 64) {
        const auto* from = reinterpret_cast<const __m128i*>(in + offset);
        auto* to = reinterpret_cast<__m128i*>(out + offset);
        const __m128i a = _mm_loadu_si128(from), b = _mm_loadu_si128(from + 1),
                      c = _mm_loadu_si128(from + 2), d = _mm_loadu_si128(from + 3);
        _mm_stream_si128(to, a);
        _mm_stream_si128(to + 1, b);
        _mm_stream_si128(to + 2, c);
        _mm_stream_si128(to + 3, d);
      }
      std::memcpy(out + body, in + body, bytes - body);
      _mm_sfence();
      return;
    }
#endif
    (void)streaming;
    std::memcpy(destination, source, bytes);
  }

  // `piece_elements` 0: as many as a staging buffer holds.
  KernelStatus run_on_lane(Lane& lane, const ScanJob& job, std::int64_t piece_elements = 0) {
    SCAN_CUDA_CHECK("cudaSetDevice", cudaSetDevice(ordinal_));
    // Input or output in registered memory: DMA straight from / into it. The leases keep the
    // ranges registered until nothing of this job runs any more (they end after the syncs below).
    const std::size_t bytes =
        static_cast<std::size_t>(job.view.numel()) * kernels::element_size(job.dtype);
    const HostRegistry::Lease direct_in =
        registry_ != nullptr ? registry_->hold(job.input, bytes) : HostRegistry::Lease();
    const HostRegistry::Lease direct_out =
        registry_ != nullptr ? registry_->hold(job.output, bytes) : HostRegistry::Lease();
    KernelStatus status =
        stream_pieces(lane, job, piece_elements, direct_in.held(), direct_out.held());
    if (!status.ok()) {
      // Nothing of this request may still be running when the lane serves the next one.
      for (Slot& slot : lane.slots) cudaStreamSynchronize(slot.stream);
      cudaGetLastError();  // clears a non-sticky error; a sticky one keeps failing requests
    }
    return status;
  }

  // `direct_in` / `direct_out`: the job's input / output is registered memory, copied by DMA
  // without the staging buffer.
  KernelStatus stream_pieces(Lane& lane, const ScanJob& job, std::int64_t piece_elements,
                             bool direct_in, bool direct_out) {
    const DType dtype = job.dtype;
    const std::size_t element = kernels::element_size(dtype);
    const bool sixteen_bit = element == 2;
    const std::int64_t capacity = options_.chunk_bytes / static_cast<std::int64_t>(element);
    const std::vector<ChunkPiece> pieces =
        plan_chunks(job.view, piece_elements > 0 ? std::min(piece_elements, capacity) : capacity);
    const std::size_t ring = lane.slots.size();
    const auto* input = static_cast<const char*>(job.input);
    auto* output = static_cast<char*>(job.output);
    float to_device_ms = 0, to_host_ms = 0;
    cudaEvent_t last_carry = nullptr;

    // Waits for piece `index` to be back in its staging buffer and copies it into the output.
    auto drain = [&](std::size_t index) -> KernelStatus {
      const ChunkPiece& piece = pieces[index];
      Slot& slot = lane.slots[index % ring];
      SCAN_CUDA_CHECK("cudaEventSynchronize", cudaEventSynchronize(slot.d2h_end));
      float milliseconds = 0;
      SCAN_CUDA_CHECK("cudaEventElapsedTime",
                      cudaEventElapsedTime(&milliseconds, slot.h2d_start, slot.h2d_end));
      to_device_ms += milliseconds;
      SCAN_CUDA_CHECK("cudaEventElapsedTime",
                      cudaEventElapsedTime(&milliseconds, slot.d2h_start, slot.d2h_end));
      to_host_ms += milliseconds;
      if (!direct_out) {
        parallel_copy(output + piece.offset * element, slot.pinned,
                      static_cast<std::size_t>(piece.numel()) * element);
      }
      return KernelStatus::Ok();
    };

    for (std::size_t index = 0; index < pieces.size(); ++index) {
      const ChunkPiece& piece = pieces[index];
      Slot& slot = lane.slots[index % ring];
      if (index >= ring) SCAN_KERNEL_CHECK(drain(index - ring));
      const std::size_t bytes = static_cast<std::size_t>(piece.numel()) * element;
      const char* from = input + piece.offset * element;
      if (!direct_in) {
        parallel_copy(slot.pinned, from, bytes);
        from = static_cast<const char*>(slot.pinned);
      }

      cudaStream_t stream = slot.stream;
      SCAN_CUDA_CHECK("cudaEventRecord", cudaEventRecord(slot.h2d_start, stream));
      SCAN_CUDA_CHECK("cudaMemcpyAsync (to device)",
                      cudaMemcpyAsync(slot.device, from, bytes, cudaMemcpyHostToDevice, stream));
      SCAN_CUDA_CHECK("cudaEventRecord", cudaEventRecord(slot.h2d_end, stream));
      if (!piece.needs_carry()) {
        SCAN_KERNEL_CHECK(
            kernels::cuda_cumprod(slot.device, slot.device, piece.shape, dtype, stream));
      } else {
        void* scanned = slot.device;
        DType scanned_dtype = dtype;
        if (sixteen_bit) {
          SCAN_KERNEL_CHECK(
              kernels::cuda_widen_to_f32(slot.device, dtype, slot.work, piece.numel(), stream));
          scanned = slot.work;
          scanned_dtype = DType::kFloat32;
        }
        SCAN_KERNEL_CHECK(
            kernels::cuda_cumprod(scanned, scanned, piece.shape, scanned_dtype, stream));
        // Carry passes run in plan order: each reads the carry the previous one wrote.
        if (last_carry != nullptr) {
          SCAN_CUDA_CHECK("cudaStreamWaitEvent", cudaStreamWaitEvent(stream, last_carry, 0));
        }
        SCAN_KERNEL_CHECK(kernels::cuda_apply_carry(
            scanned, scanned_dtype, slot.device, dtype, piece.shape.length, piece.shape.inner,
            piece.carry_in ? lane.carry[piece.parity] : nullptr,
            piece.carry_out ? lane.carry[1 - piece.parity] : nullptr, stream));
        SCAN_CUDA_CHECK("cudaEventRecord", cudaEventRecord(slot.carry_done, stream));
        last_carry = slot.carry_done;
      }
      SCAN_CUDA_CHECK("cudaEventRecord", cudaEventRecord(slot.d2h_start, stream));
      void* to = direct_out ? static_cast<void*>(output + piece.offset * element) : slot.pinned;
      SCAN_CUDA_CHECK("cudaMemcpyAsync (to host)",
                      cudaMemcpyAsync(to, slot.device, bytes, cudaMemcpyDeviceToHost, stream));
      SCAN_CUDA_CHECK("cudaEventRecord", cudaEventRecord(slot.d2h_end, stream));
    }
    const std::size_t first_undrained = pieces.size() > ring ? pieces.size() - ring : 0;
    for (std::size_t index = first_undrained; index < pieces.size(); ++index) {
      SCAN_KERNEL_CHECK(drain(index));
    }
    if (job.stats != nullptr) {
      job.stats->host_to_device_seconds = to_device_ms * 1e-3;
      job.stats->device_to_host_seconds = to_host_ms * 1e-3;
    }
    return KernelStatus::Ok();
  }

  // Scans small tensors through every path of the pipeline (whole blocks; rows carried across
  // pieces; rows split into column ranges; 16-bit widening) and checks them against the float64
  // reference: the start-up check of a new device and the health probe of an unhealthy one.
  KernelStatus probe() {
    struct Case {
      DType dtype;
      kernels::ScanShape shape;
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
      const std::size_t bytes = static_cast<std::size_t>(count) * kernels::element_size(each.dtype);
      std::vector<char> input(bytes), output(bytes);
      kernels::narrow_from_f64(values.data(), count, each.dtype, input.data());
      const std::vector<double> stored = kernels::widen_to_f64(input.data(), each.dtype, count);
      std::vector<double> expected(stored.size());
      kernels::reference_cumprod(stored.data(), expected.data(), each.shape);
      status = run_on_lane(lane, {each.dtype, each.shape, input.data(), output.data(), nullptr},
                           each.piece_elements);
      if (!status.ok()) break;
      const kernels::Comparison comparison =
          kernels::compare_to_reference(expected.data(), output.data(), each.dtype, count,
                                        kernels::cumprod_tolerance(each.dtype, each.shape.length));
      if (!comparison.ok()) {
        status = {
            KernelStatus::Code::kDeviceError,
            fmt::format("{}: probe scan gave {} wrong elements", name_, comparison.mismatches)};
        break;
      }
    }
    release_lane(lane);
    return status;
  }

  void probe_loop() {
    std::unique_lock<std::mutex> lock(prober_mutex_);
    const auto tick = std::chrono::duration_cast<DeviceHealth::Clock::duration>(
        std::chrono::duration<double>(std::max(0.01, options_.probe_interval_seconds / 4)));
    while (!prober_wake_.wait_for(lock, tick, [this] { return stopping_; })) {
      if (!health_.probe_due(DeviceHealth::Clock::now())) continue;
      lock.unlock();
      const KernelStatus status = probe();
      if (health_.record_probe(status.ok(), DeviceHealth::Clock::now())) {
        spdlog::info("{}: probe passed, serving again", name_);
        notify(true);
      } else if (!status.ok()) {
        spdlog::warn("{}: probe failed, still unhealthy: {}", name_, status.message());
      }
      lock.lock();
    }
  }

  const std::string name_;
  const int ordinal_;
  const CudaBackendOptions options_;
  kernels::ThreadPool copy_pool_;
  DeviceHealth health_;
  std::atomic<int> injected_failures_;
  HostRegistry* const registry_;  // owned by options_.host_registry; null: always stage
  std::int64_t device_bytes_ = 0;
  std::int64_t pinned_bytes_ = 0;

  std::vector<std::unique_ptr<Lane>> lanes_;
  std::mutex lanes_mutex_;
  std::condition_variable lane_free_;
  std::vector<Lane*> free_lanes_;

  std::mutex callback_mutex_;
  std::function<void(bool)> on_change_;

  std::mutex prober_mutex_;
  std::condition_variable prober_wake_;
  bool stopping_ = false;
  std::thread prober_;
};

}  // namespace

GpuInventory discover_gpus() {
  GpuInventory inventory;
  int count = 0;
  if (const cudaError_t error = cudaGetDeviceCount(&count); error != cudaSuccess) {
    inventory.status =
        fmt::format("no usable GPU: {} ({})", cudaGetErrorName(error), cudaGetErrorString(error));
    cudaGetLastError();
    return inventory;
  }
  int driver = 0;
  cudaDriverGetVersion(&driver);
  int usable = 0;
  for (int ordinal = 0; ordinal < count; ++ordinal) {
    GpuDevice device;
    device.ordinal = ordinal;
    cudaDeviceProp properties{};
    if (const cudaError_t error = cudaGetDeviceProperties(&properties, ordinal);
        error != cudaSuccess) {
      device.detail = fmt::format("cudaGetDeviceProperties: {}", cudaGetErrorName(error));
      inventory.devices.push_back(device);
      continue;
    }
    device.name = properties.name;
    device.total_memory_bytes = static_cast<std::int64_t>(properties.totalGlobalMem);
    device.compute_capability_major = properties.major;
    device.compute_capability_minor = properties.minor;
    device.multiprocessors = properties.multiProcessorCount;
    device.usable = properties.major >= kMinComputeCapability;
    if (!device.usable) {
      device.detail = fmt::format("compute capability {}.{} < {}.0 (the kernels need sm_80+)",
                                  properties.major, properties.minor, kMinComputeCapability);
    }
    usable += device.usable ? 1 : 0;
    inventory.devices.push_back(device);
  }
  inventory.status = fmt::format("{} of {} GPUs usable (driver {}.{})", usable, count,
                                 driver / 1000, driver % 1000 / 10);
  return inventory;
}

std::unique_ptr<CudaHostRegistry> make_cuda_host_registry() {
  return std::make_unique<HostRegistry>();
}

std::shared_ptr<CudaHostRegistry> process_cuda_host_registry() {
  static const std::shared_ptr<CudaHostRegistry> registry = make_cuda_host_registry();
  return registry;
}

std::unique_ptr<ScanBackend> make_cuda_backend(int ordinal, const CudaBackendOptions& options,
                                               std::string* error) {
  auto backend = std::make_unique<CudaBackend>(ordinal, options);
  if (KernelStatus status = backend->init(); !status.ok()) {
    *error = status.message();
    return nullptr;
  }
  return backend;
}

}  // namespace scan::server

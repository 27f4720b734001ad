// CudaHostRegistry: ranges by start address; a background thread registers queued ones.
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdio>
#include <iterator>

#include "scan/kernels/cuda_pipeline.h"

namespace scan::kernels {
namespace {

std::string mebibytes(std::size_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return text;
}

}  // namespace

CudaHostRegistry::Lease::~Lease() {
  if (registry_ != nullptr) registry_->release(key_);
}

CudaHostRegistry::CudaHostRegistry(PipelineLog log) : log_(std::move(log)) {}

CudaHostRegistry::~CudaHostRegistry() {
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

void CudaHostRegistry::register_async(const void* data, std::size_t bytes) {
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

void CudaHostRegistry::unregister(const void* data, std::size_t bytes) {
  const auto key = reinterpret_cast<std::uintptr_t>(data);
  std::unique_lock<std::mutex> lock(mutex_);
  auto found = entries_.find(key);
  if (found == entries_.end()) return;
  changed_.wait(lock, [&] {
    found = entries_.find(key);
    return found == entries_.end() ||
           (found->second.state != State::kRegistering && found->second.state != State::kLeaving &&
            found->second.users == 0);
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
  if (log_) {
    log_(PipelineLogLevel::kDebug, "unregistered a pooled buffer of " + mebibytes(bytes) + " (" +
                                       mebibytes(static_cast<std::size_t>(registered)) +
                                       " registered for DMA)");
  }
}

CudaHostRegistry::Lease CudaHostRegistry::hold(const void* data, std::size_t bytes) {
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

std::int64_t CudaHostRegistry::registered_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return registered_bytes_;
}

void CudaHostRegistry::wait_idle() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] { return queue_.empty() && registering_ == 0; });
}

void CudaHostRegistry::release(std::uintptr_t key) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = entries_.find(key);
    if (found != entries_.end()) --found->second.users;
  }
  changed_.notify_all();
}

void CudaHostRegistry::work() {
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
    if (log_) {
      // The server's pool registers buffers of 1 MiB and more, a few times per size.
      const PipelineLogLevel level =
          bytes >= (std::size_t{1} << 20) ? PipelineLogLevel::kInfo : PipelineLogLevel::kDebug;
      char timing[32];
      std::snprintf(timing, sizeof timing, "%.1f ms", milliseconds);
      log_(level, error == cudaSuccess
                      ? "registered a pooled buffer of " + mebibytes(bytes) + " for DMA in " +
                            timing + " (" + mebibytes(static_cast<std::size_t>(registered)) +
                            " registered)"
                      : "cannot register a pooled buffer of " + mebibytes(bytes) + " for DMA (" +
                            cudaGetErrorName(error) + "): staged");
    }
    lock.lock();
  }
}

}  // namespace scan::kernels

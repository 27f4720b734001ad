// Bounds how many scans a backend runs at once. Requests beyond the bound wait here (this is the
// "queue" of Timing.queue_us) instead of oversubscribing the cores; waiting gives up when the
// caller's deadline passes or the caller is cancelled.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>

namespace scan::server {

class ComputeSlots {
 public:
  explicit ComputeSlots(int capacity) : free_(capacity) {}
  ComputeSlots(const ComputeSlots&) = delete;
  ComputeSlots& operator=(const ComputeSlots&) = delete;

  enum class Outcome { kAcquired, kDeadlineExceeded, kCancelled };

  // Waits for a free slot until `deadline`, polling `cancelled` every `poll` while waiting.
  Outcome acquire(std::chrono::steady_clock::time_point deadline,
                  const std::function<bool()>& cancelled,
                  std::chrono::milliseconds poll = std::chrono::milliseconds(20)) {
    std::unique_lock<std::mutex> lock(mutex_);
    while (free_ == 0) {
      if (cancelled && cancelled()) return Outcome::kCancelled;
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) return Outcome::kDeadlineExceeded;
      available_.wait_until(lock, std::min(deadline, now + poll));
    }
    --free_;
    return Outcome::kAcquired;
  }

  void release() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++free_;
    }
    available_.notify_one();
  }

 private:
  std::mutex mutex_;
  std::condition_variable available_;
  int free_;
};

// Holds one slot for a scope.
class SlotLease {
 public:
  explicit SlotLease(ComputeSlots& slots) : slots_(slots) {}
  ~SlotLease() { slots_.release(); }
  SlotLease(const SlotLease&) = delete;
  SlotLease& operator=(const SlotLease&) = delete;

 private:
  ComputeSlots& slots_;
};

}  // namespace scan::server

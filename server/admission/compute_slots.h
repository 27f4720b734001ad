// Bounds how many scans a backend runs at once, and how many may wait for it. Requests beyond the
// running bound wait here (this is the "queue" of Timing.queue_us) instead of oversubscribing the
// cores; beyond the waiting bound they are refused at once, so the queue (and the memory its
// requests hold) never grows without limit. Waiting gives up when the caller's deadline passes or
// the caller is cancelled.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>

namespace scan::server {

class ComputeSlots {
 public:
  ComputeSlots(int capacity, int max_waiting) : free_(capacity), max_waiting_(max_waiting) {}
  ComputeSlots(const ComputeSlots&) = delete;
  ComputeSlots& operator=(const ComputeSlots&) = delete;

  enum class Outcome { kAcquired, kQueueFull, kDeadlineExceeded, kCancelled };

  // Waits for a free slot until `deadline`, polling `cancelled` every `poll` while waiting.
  Outcome acquire(std::chrono::steady_clock::time_point deadline,
                  const std::function<bool()>& cancelled,
                  std::chrono::milliseconds poll = std::chrono::milliseconds(20)) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (free_ == 0 && waiting_ >= max_waiting_) return Outcome::kQueueFull;
    ++waiting_;
    Outcome outcome = Outcome::kAcquired;
    while (free_ == 0) {
      if (cancelled && cancelled()) {
        outcome = Outcome::kCancelled;
        break;
      }
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) {
        outcome = Outcome::kDeadlineExceeded;
        break;
      }
      available_.wait_until(lock, std::min(deadline, now + poll));
    }
    --waiting_;
    if (outcome == Outcome::kAcquired) --free_;
    return outcome;
  }

  // A slot if one is free and nobody is waiting for one (no overtaking the queue); never waits.
  bool try_acquire() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (free_ == 0 || waiting_ > 0) return false;
    --free_;
    return true;
  }

  void release() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++free_;
    }
    available_.notify_one();
  }

  // Requests waiting right now (a snapshot, for routing and metrics).
  int waiting() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return waiting_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable available_;
  int free_;
  int waiting_ = 0;
  const int max_waiting_;
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

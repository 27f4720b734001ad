// When a GPU stops being trusted and when it is tried again. A device that fails
// `max_consecutive_errors` requests in a row is marked unhealthy (the router stops sending it
// work, scan_backend_up reads 0); every `probe_interval` a probe scan is due, and one that passes
// makes it healthy again. A single error does not: one bad request (say, a launch that ran out of
// a resource) should not take a device out of service. Pure state machine with explicit time, so
// it is unit-tested without a GPU. Thread-safe.
#pragma once

#include <chrono>
#include <mutex>

namespace scan::server {

class DeviceHealth {
 public:
  using Clock = std::chrono::steady_clock;

  DeviceHealth(int max_consecutive_errors, Clock::duration probe_interval)
      : max_errors_(max_consecutive_errors < 1 ? 1 : max_consecutive_errors),
        probe_interval_(probe_interval) {}

  bool healthy() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return healthy_;
  }

  // Returns true when this error turned a healthy device unhealthy.
  bool record_error(Clock::time_point now) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++consecutive_errors_;
    if (!healthy_ || consecutive_errors_ < max_errors_) return false;
    healthy_ = false;
    next_probe_ = now + probe_interval_;
    return true;
  }

  void record_success() {
    std::lock_guard<std::mutex> lock(mutex_);
    consecutive_errors_ = 0;
  }

  bool probe_due(Clock::time_point now) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return !healthy_ && now >= next_probe_;
  }

  // Returns true when this probe turned an unhealthy device healthy.
  bool record_probe(bool passed, Clock::time_point now) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (healthy_) return false;
    if (!passed) {
      next_probe_ = now + probe_interval_;
      return false;
    }
    healthy_ = true;
    consecutive_errors_ = 0;
    return true;
  }

 private:
  mutable std::mutex mutex_;
  const int max_errors_;
  const Clock::duration probe_interval_;
  bool healthy_ = true;
  int consecutive_errors_ = 0;
  Clock::time_point next_probe_{};
};

}  // namespace scan::server

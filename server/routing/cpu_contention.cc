#include "routing/cpu_contention.h"

#include <algorithm>
#include <ctime>
#include <utility>

namespace scan::server {

CpuContention::CpuContention(int cores, UsageProbe probe, Clock::duration interval)
    : cores_(std::max(cores, 1)), probe_(std::move(probe)), interval_(interval) {}

CpuContention::~CpuContention() {
  if (!sampler_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(sampler_mutex_);
    stopping_ = true;
  }
  sampler_wake_.notify_one();
  sampler_.join();
}

void CpuContention::start_sampling() {
  if (!sampler_.joinable()) sampler_ = std::thread([this] { sample(); });
}

double CpuContention::current() {
  last_asked_.store(Clock::now().time_since_epoch().count());
  // Sequentially consistent with the sampler's store of parked_ before it reads last_asked_:
  // either this sees it parked and wakes it, or it sees this call's time and stays up.
  if (parked_.load()) {
    { std::lock_guard<std::mutex> lock(sampler_mutex_); }
    sampler_wake_.notify_one();
  }
  return slowdown_.load(std::memory_order_relaxed);
}

void CpuContention::sample() {
  const auto asked_lately = [this] {
    return Clock::now().time_since_epoch().count() - last_asked_.load() <
           std::chrono::duration_cast<Clock::duration>(std::chrono::seconds(1)).count();
  };
  std::unique_lock<std::mutex> lock(sampler_mutex_);
  while (!stopping_) {
    if (!asked_lately()) {
      parked_.store(true);
      sampler_wake_.wait(lock, [&] { return stopping_ || asked_lately(); });
      parked_.store(false);
      continue;
    }
    refresh();
    sampler_wake_.wait_for(lock, interval_, [this] { return stopping_; });
  }
}

double CpuContention::refresh(Clock::time_point now) {
  std::unique_lock<std::mutex> lock(mutex_, std::try_to_lock);
  if (!lock.owns_lock() || now - last_time_ < interval_) {
    return slowdown_.load(std::memory_order_relaxed);
  }
  const Usage usage = probe_();
  if (last_time_ != Clock::time_point{}) {
    const double wall = std::chrono::duration<double>(now - last_time_).count();
    const double other = ((usage.process_seconds - last_usage_.process_seconds) -
                          (usage.scans_seconds - last_usage_.scans_seconds)) /
                         wall;
    // A silence longer than a few intervals says nothing of the last moments: start afresh.
    const double weight = now - last_time_ > 10 * interval_ ? 1.0 : kSmoothing;
    other_cores_ += weight * (std::clamp(other, 0.0, cores_ - 1.0) - other_cores_);
    slowdown_.store(cores_ / (cores_ - other_cores_), std::memory_order_relaxed);
  }
  last_time_ = now;
  last_usage_ = usage;
  return slowdown_.load(std::memory_order_relaxed);
}

CpuContention::UsageProbe process_usage_probe(std::function<double()> scans_seconds) {
  return [scans_seconds = std::move(scans_seconds)] {
    timespec used{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &used);
    return CpuContention::Usage{
        static_cast<double>(used.tv_sec) + static_cast<double>(used.tv_nsec) * 1e-9,
        scans_seconds()};
  };
}

}  // namespace scan::server

// A server-wide budget of tensor bytes held by requests being served (request plus response
// buffers). A request that does not fit is refused at once with RESOURCE_EXHAUSTED instead of
// queueing, so memory stays bounded however many clients push at once.
#pragma once

#include <atomic>
#include <cstdint>

namespace scan::server {

class ByteBudget {
 public:
  explicit ByteBudget(std::int64_t limit) : limit_(limit) {}

  std::int64_t limit() const { return limit_; }
  std::int64_t in_use() const { return in_use_.load(std::memory_order_relaxed); }

  bool try_acquire(std::int64_t bytes) {
    std::int64_t current = in_use_.load(std::memory_order_relaxed);
    do {
      if (bytes > limit_ - current) return false;
    } while (!in_use_.compare_exchange_weak(current, current + bytes, std::memory_order_relaxed));
    return true;
  }

  void release(std::int64_t bytes) { in_use_.fetch_sub(bytes, std::memory_order_relaxed); }

 private:
  const std::int64_t limit_;
  std::atomic<std::int64_t> in_use_{0};
};

// Holds bytes of a budget for a scope.
class BudgetLease {
 public:
  BudgetLease(ByteBudget& budget, std::int64_t bytes) : budget_(budget), bytes_(bytes) {}
  ~BudgetLease() { budget_.release(bytes_); }
  BudgetLease(const BudgetLease&) = delete;
  BudgetLease& operator=(const BudgetLease&) = delete;

 private:
  ByteBudget& budget_;
  const std::int64_t bytes_;
};

}  // namespace scan::server

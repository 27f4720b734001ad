// A server-wide budget of tensor bytes held by requests being served (request plus response
// buffers). A request that does not fit is refused at once with RESOURCE_EXHAUSTED instead of
// queueing, so memory stays bounded however many clients push at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <utility>

namespace scan::server {

class ByteBudget {
 public:
  explicit ByteBudget(std::int64_t limit) : limit_(limit) {}

  std::int64_t limit() const { return limit_; }
  std::int64_t in_use() const { return in_use_.load(std::memory_order_relaxed); }

  // Told every change of in_use() (a gauge, say); set before the budget is shared.
  void set_observer(std::function<void(std::int64_t delta)> observer) {
    observer_ = std::move(observer);
  }

  bool try_acquire(std::int64_t bytes) {
    std::int64_t current = in_use_.load(std::memory_order_relaxed);
    do {
      if (bytes > limit_ - current) return false;
    } while (!in_use_.compare_exchange_weak(current, current + bytes, std::memory_order_relaxed));
    if (observer_) observer_(bytes);
    return true;
  }

  void release(std::int64_t bytes) {
    in_use_.fetch_sub(bytes, std::memory_order_relaxed);
    if (observer_) observer_(-bytes);
  }

 private:
  const std::int64_t limit_;
  std::atomic<std::int64_t> in_use_{0};
  std::function<void(std::int64_t)> observer_;
};

// Holds bytes of a budget until it goes out of scope; may grow and shrink as a call's buffers do.
class BudgetLease {
 public:
  explicit BudgetLease(ByteBudget& budget, std::int64_t bytes = 0)
      : budget_(budget), bytes_(bytes) {}
  ~BudgetLease() {
    if (bytes_ > 0) budget_.release(bytes_);
  }
  BudgetLease(const BudgetLease&) = delete;
  BudgetLease& operator=(const BudgetLease&) = delete;

  std::int64_t bytes() const { return bytes_; }
  // False, holding no more, when the budget lacks `more` bytes.
  bool try_grow(std::int64_t more) {
    if (!budget_.try_acquire(more)) return false;
    bytes_ += more;
    return true;
  }
  void shrink(std::int64_t fewer) {
    budget_.release(fewer);
    bytes_ -= fewer;
  }

 private:
  ByteBudget& budget_;
  std::int64_t bytes_;
};

}  // namespace scan::server

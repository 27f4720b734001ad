#include "scan/kernels/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace scan::kernels {
namespace {

TEST(ThreadPool, RunsEveryTaskExactlyOnce) {
  ThreadPool pool(3);
  for (const std::int64_t tasks : {0, 1, 2, 7, 1000}) {
    std::vector<std::atomic<int>> hits(static_cast<std::size_t>(tasks));
    pool.parallel_for(tasks, 4, [&](std::int64_t task) { hits[task].fetch_add(1); });
    for (std::int64_t task = 0; task < tasks; ++task) EXPECT_EQ(hits[task].load(), 1) << task;
  }
}

// The bound is what keeps concurrent requests from oversubscribing the cores.
TEST(ThreadPool, NeverExceedsMaxParallelism) {
  ThreadPool pool(4);
  for (const int limit : {1, 2, 3}) {
    std::atomic<int> active{0};
    std::atomic<int> peak{0};
    pool.parallel_for(64, limit, [&](std::int64_t) {
      const int now = active.fetch_add(1) + 1;
      int seen = peak.load();
      while (now > seen && !peak.compare_exchange_weak(seen, now)) {
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      active.fetch_sub(1);
    });
    EXPECT_LE(peak.load(), limit);
  }
}

TEST(ThreadPool, WorkersActuallyHelp) {
  ThreadPool pool(1);
  std::atomic<int> other_threads{0};
  const std::thread::id caller = std::this_thread::get_id();
  // Tasks long enough that the worker wakes before the caller has claimed them all.
  pool.parallel_for(50, 2, [&](std::int64_t) {
    if (std::this_thread::get_id() != caller) other_threads.fetch_add(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  EXPECT_GT(other_threads.load(), 0);
}

// The router subtracts this from the process's CPU time (server/routing/cpu_contention.h): work
// done by the workers must show up in it, and a pool left idle must stop adding to it.
TEST(ThreadPool, WorkersCpuTimeCountsTheirWork) {
  ThreadPool pool(2);
  const double before = pool.workers_cpu_seconds();
  std::atomic<int> by_workers{0};
  const std::thread::id caller = std::this_thread::get_id();
  pool.parallel_for(64, 3, [&](std::int64_t) {
    if (std::this_thread::get_id() != caller) by_workers.fetch_add(1);
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(2);
    while (std::chrono::steady_clock::now() < until) {
    }
  });
  ASSERT_GT(by_workers.load(), 0);
  const double busy = pool.workers_cpu_seconds();
  // Each task a worker took spun for 2 ms of wall time; at least a quarter of it is CPU time even
  // on CI's two cores shared with other tests.
  EXPECT_GE(busy - before, by_workers.load() * 0.0005);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const double settled = pool.workers_cpu_seconds();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_LT(pool.workers_cpu_seconds() - settled, 0.01);  // asleep, not polling
  EXPECT_EQ(ThreadPool(0).workers_cpu_seconds(), 0);
}

TEST(ThreadPool, ZeroWorkersRunsOnCaller) {
  ThreadPool pool(0);
  EXPECT_EQ(pool.max_parallelism(), 1);
  const std::thread::id caller = std::this_thread::get_id();
  int count = 0;
  pool.parallel_for(10, 8, [&](std::int64_t) {
    EXPECT_EQ(std::this_thread::get_id(), caller);
    ++count;
  });
  EXPECT_EQ(count, 10);
}

TEST(ThreadPool, ManyConcurrentCallers) {
  ThreadPool pool(2);
  std::vector<std::thread> callers;
  std::vector<std::int64_t> sums(6, 0);
  for (int caller = 0; caller < 6; ++caller) {
    callers.emplace_back([&, caller] {
      for (int round = 0; round < 200; ++round) {
        std::vector<std::int64_t> values(37, 0);
        pool.parallel_for(37, 1 + caller % 3, [&](std::int64_t task) { values[task] = task; });
        for (const std::int64_t value : values) sums[caller] += value;
      }
    });
  }
  for (std::thread& caller : callers) caller.join();
  for (const std::int64_t sum : sums) EXPECT_EQ(sum, 200 * (36 * 37 / 2));
}

TEST(ThreadPool, StartsAndStopsCleanly) {
  for (int round = 0; round < 20; ++round) {
    ThreadPool pool(round % 4);
    if (round % 2) {
      std::atomic<int> count{0};
      pool.parallel_for(5, 4, [&](std::int64_t) { count.fetch_add(1); });
      EXPECT_EQ(count.load(), 5);
    }
  }
}

}  // namespace
}  // namespace scan::kernels

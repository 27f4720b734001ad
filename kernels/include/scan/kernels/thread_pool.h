// A persistent pool of worker threads shared by every request of the process. Threads are created
// once, in the constructor; the request path only queues pointers and wakes sleepers.
//
// Parallelism is bounded per call: parallel_for() runs its tasks on the calling thread plus at
// most `max_parallelism - 1` workers. The caller always participates, so a call makes progress
// even when every worker is busy with other requests (no deadlock, no waiting for a free worker),
// and the number of threads computing at once is at most `workers() + concurrent callers`. Size the
// pool at `cores - 1` (default_workers()) so that one request alone uses every core.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace scan::kernels {

class ThreadPool {
 public:
  // `workers` threads are started now; 0 is valid (every call then runs on its caller).
  explicit ThreadPool(int workers = default_workers());
  // Joins the workers. No parallel_for() may be running or start afterwards.
  ~ThreadPool();

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // hardware_concurrency() - 1, at least 0: with the caller that is one thread per core.
  static int default_workers();

  int workers() const { return static_cast<int>(threads_.size()); }
  // The most threads one call can use: every worker plus the caller.
  int max_parallelism() const { return workers() + 1; }
  // CPU time the workers have used since they started (their polling included), in seconds: what
  // the pool's work costs the host, beside the callers' own share. 0 where threads have no CPU
  // clocks.
  double workers_cpu_seconds() const;

  // Calls body(task) once for every task in [0, tasks), on the caller and on at most
  // `max_parallelism - 1` workers (values < 1 mean 1), and returns when all calls have returned.
  // Tasks are claimed dynamically, so uneven tasks balance themselves. `body` must not throw.
  template <typename Body>
  void parallel_for(std::int64_t tasks, int max_parallelism, Body&& body) {
    using Decayed = std::remove_reference_t<Body>;
    run(
        tasks, max_parallelism,
        [](void* context, std::int64_t task) { (*static_cast<Decayed*>(context))(task); },
        const_cast<void*>(static_cast<const void*>(&body)));
  }

 private:
  using TaskFn = void (*)(void* context, std::int64_t task);
  struct Job;

  void run(std::int64_t tasks, int max_parallelism, TaskFn fn, void* context);
  void worker_loop();
  static void drain(Job& job);

  std::mutex mutex_;
  std::condition_variable work_available_;
  // One entry per helper a caller asked for; a caller removes its unclaimed entries when it is
  // done, so an entry never outlives the Job (which lives on the caller's stack).
  std::deque<Job*> queue_;
  // queue_.size(), readable without the mutex by workers polling before they sleep.
  std::atomic<std::int64_t> queued_{0};
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace scan::kernels

#include "scan/kernels/thread_pool.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>

namespace scan::kernels {
namespace {

// After finishing a job a worker polls this long before sleeping: waking a sleeping thread costs
// 10 to 200 microseconds on a shared VM, and requests (and the two phases of a blocked scan)
// often come back to back. Short enough that an idle pool costs no measurable CPU.
constexpr std::chrono::microseconds kSpinBeforeSleep{100};

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

struct ThreadPool::Job {
  TaskFn fn = nullptr;
  void* context = nullptr;
  std::int64_t tasks = 0;
  // Claimed with fetch_add so that helpers arriving late (or never) cost nothing: whoever is
  // running takes the next unclaimed task.
  std::atomic<std::int64_t> next{0};
  // Helpers that dequeued this job and may still be inside fn; guarded by the pool mutex.
  int running_helpers = 0;
  std::condition_variable helpers_done;
};

ThreadPool::ThreadPool(int workers) {
  threads_.reserve(static_cast<std::size_t>(std::max(workers, 0)));
  for (int index = 0; index < workers; ++index) threads_.emplace_back([this] { worker_loop(); });
}

double ThreadPool::workers_cpu_seconds() const {
  double seconds = 0;
  for (const std::thread& thread : threads_) {
    // std::thread's handle is a pthread_t on every platform this builds on (glibc, musl).
    clockid_t clock{};
    timespec used{};
    if (pthread_getcpuclockid(const_cast<std::thread&>(thread).native_handle(), &clock) == 0 &&
        clock_gettime(clock, &used) == 0) {
      seconds += static_cast<double>(used.tv_sec) + static_cast<double>(used.tv_nsec) * 1e-9;
    }
  }
  return seconds;
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_available_.notify_all();
  for (std::thread& thread : threads_) thread.join();
}

int ThreadPool::default_workers() {
  const unsigned cores = std::thread::hardware_concurrency();
  return cores > 1 ? static_cast<int>(cores) - 1 : 0;
}

void ThreadPool::drain(Job& job) {
  for (;;) {
    const std::int64_t task = job.next.fetch_add(1, std::memory_order_relaxed);
    if (task >= job.tasks) return;
    job.fn(job.context, task);
  }
}

void ThreadPool::run(std::int64_t tasks, int max_parallelism, TaskFn fn, void* context) {
  if (tasks <= 0) return;
  const std::int64_t helpers = std::min<std::int64_t>(
      {static_cast<std::int64_t>(max_parallelism) - 1, workers(), tasks - 1});
  if (helpers <= 0) {
    for (std::int64_t task = 0; task < tasks; ++task) fn(context, task);
    return;
  }

  Job job;
  job.fn = fn;
  job.context = context;
  job.tasks = tasks;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (std::int64_t index = 0; index < helpers; ++index) queue_.push_back(&job);
    queued_.store(static_cast<std::int64_t>(queue_.size()), std::memory_order_release);
  }
  for (std::int64_t index = 0; index < helpers; ++index) work_available_.notify_one();

  drain(job);

  // Every task is claimed now. Withdraw the entries no worker picked up, then wait for helpers
  // still finishing a claimed task: after that nobody touches `job` or `context` again.
  std::unique_lock<std::mutex> lock(mutex_);
  queue_.erase(std::remove(queue_.begin(), queue_.end(), &job), queue_.end());
  queued_.store(static_cast<std::int64_t>(queue_.size()), std::memory_order_release);
  job.helpers_done.wait(lock, [&job] { return job.running_helpers == 0; });
}

void ThreadPool::worker_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  bool just_worked = false;
  for (;;) {
    if (just_worked && queue_.empty() && !stopping_) {
      lock.unlock();
      const auto deadline = std::chrono::steady_clock::now() + kSpinBeforeSleep;
      while (queued_.load(std::memory_order_acquire) == 0 &&
             std::chrono::steady_clock::now() < deadline) {
        for (int pause = 0; pause < 64; ++pause) cpu_relax();
      }
      lock.lock();
    }
    work_available_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    Job* job = queue_.front();
    queue_.pop_front();
    queued_.store(static_cast<std::int64_t>(queue_.size()), std::memory_order_release);
    ++job->running_helpers;
    lock.unlock();
    drain(*job);
    lock.lock();
    // Notify under the lock: the caller may destroy `job` as soon as it can take the mutex.
    if (--job->running_helpers == 0) job->helpers_done.notify_all();
    just_worked = true;
  }
}

}  // namespace scan::kernels

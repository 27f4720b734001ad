#include "shared_memory/fault_guard.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <mutex>

namespace scan::server::shared_memory {
namespace {

// Read by the signal handler, so plain atomics only: no locks, no allocation. A slot is live when
// `end` is non-zero; writers publish `start` before `end` and clear `end` first.
struct WatchedRange {
  std::atomic<std::uintptr_t> start{0};
  std::atomic<std::uintptr_t> end{0};
  std::atomic<std::uint64_t> faults{0};
  std::atomic<bool> taken{false};
};

std::array<WatchedRange, kMaxWatchedRanges> ranges;
struct sigaction previous_action;

void on_sigbus(int signal, siginfo_t* info, void* context) {
  const auto address = reinterpret_cast<std::uintptr_t>(info->si_addr);
  for (WatchedRange& range : ranges) {
    const std::uintptr_t end = range.end.load(std::memory_order_acquire);
    if (end == 0 || address < range.start.load(std::memory_order_acquire) || address >= end) {
      continue;
    }
    // mmap is a plain system call on Linux, safe here in practice though POSIX does not list it.
    // Made as the raw system call: replacing the page under the request's other threads, which
    // may be reading it at this moment, is the point (they read zeros, and the request is failed
    // by RegionUse::check_intact, whatever it computed). ThreadSanitizer's mmap interceptor would
    // record the remapping as a write racing with those reads (seen in CI); the kernel orders it.
    const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
    void* faulting_page = reinterpret_cast<void*>(address & ~(page - 1));
    if (syscall(SYS_mmap, faulting_page, page, PROT_READ | PROT_WRITE,
                MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) != -1) {
      range.faults.fetch_add(1, std::memory_order_acq_rel);
      return;  // the access is retried on the zero page
    }
    break;
  }
  // Not ours (or the page could not be replaced): the previous disposition, usually death.
  if ((previous_action.sa_flags & SA_SIGINFO) != 0 && previous_action.sa_sigaction != nullptr) {
    previous_action.sa_sigaction(signal, info, context);
    return;
  }
  if (previous_action.sa_handler != SIG_IGN && previous_action.sa_handler != SIG_DFL &&
      previous_action.sa_handler != nullptr) {
    previous_action.sa_handler(signal);
    return;
  }
  ::signal(SIGBUS, SIG_DFL);  // returning re-executes the access, which now kills the process
}

}  // namespace

bool install_fault_guard() {
  static std::once_flag once;
  static bool installed = false;
  std::call_once(once, [] {
    struct sigaction action = {};
    action.sa_sigaction = on_sigbus;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    installed = sigaction(SIGBUS, &action, &previous_action) == 0;
  });
  return installed;
}

int watch_range(const void* start, std::size_t bytes) {
  const auto first = reinterpret_cast<std::uintptr_t>(start);
  for (int slot = 0; slot < kMaxWatchedRanges; ++slot) {
    WatchedRange& range = ranges[static_cast<std::size_t>(slot)];
    bool expected = false;
    if (!range.taken.compare_exchange_strong(expected, true)) continue;
    range.faults.store(0, std::memory_order_relaxed);
    range.start.store(first, std::memory_order_release);
    range.end.store(first + bytes, std::memory_order_release);
    return slot;
  }
  return -1;
}

void unwatch_range(int slot) {
  if (slot < 0 || slot >= kMaxWatchedRanges) return;
  WatchedRange& range = ranges[static_cast<std::size_t>(slot)];
  range.end.store(0, std::memory_order_release);
  range.start.store(0, std::memory_order_release);
  range.taken.store(false, std::memory_order_release);
}

std::uint64_t faults_in(int slot) {
  if (slot < 0 || slot >= kMaxWatchedRanges) return 0;
  return ranges[static_cast<std::size_t>(slot)].faults.load(std::memory_order_acquire);
}

}  // namespace scan::server::shared_memory

// How much slower a CPU scan runs now than when it was calibrated, because the rest of the process
// holds cores: the gRPC transport decoding, copying and encoding tensors, GPU staging copies. The
// router stretches CPU backends' predicted times by this factor.
//
// Why: calibration times a CPU scan with every core free. Under concurrent load over gRPC the
// transport is what keeps the cores busy (16 clients of 16 MiB on the H100 host: 36-44 ms per call,
// about 1 ms of it compute), so a CPU scan there both runs slower and takes cores from the
// transport, while a GPU scan costs the host almost nothing. Priced as if the cores were free,
// AUTO sent 17-49% of 16-64 MiB requests to cpu-native and served 0.94-0.95x the requests of
// GPU-preferred. Through shared memory, where the scans themselves are the load, the factor stays
// near 1 and AUTO keeps spreading work over both devices.
//
// The estimate: over the last interval, the process's CPU time less what the CPU backends'
// scans used is `other` cores' worth of work; a CPU scan then has `cores - other` cores, so its
// time is stretched by cores / (cores - other). Process CPU time, not the host's, so that a
// container's neighbours do not count.
//
// Refreshed off the request path: reading the process's CPU clock sums over all its threads (a
// few hundred in a server), and done by routing calls it made AUTO requests of 1-4 MiB 12-18%
// slower than GPU-preferred ones on the same GPU (H100 host). A sampler thread refreshes every
// interval while routing calls keep coming, and sleeps once they have stopped for a second.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace scan::server {

class CpuContention {
 public:
  using Clock = std::chrono::steady_clock;
  // CPU seconds used so far: by the whole process, and by the CPU backends' scans within it.
  struct Usage {
    double process_seconds = 0;
    double scans_seconds = 0;
  };
  using UsageProbe = std::function<Usage()>;

  // `cores`: what a CPU scan uses when nothing else runs. `probe` reads the usage (thread-safe).
  CpuContention(int cores, UsageProbe probe,
                Clock::duration interval = std::chrono::milliseconds(20));
  ~CpuContention();
  CpuContention(const CpuContention&) = delete;
  CpuContention& operator=(const CpuContention&) = delete;

  // Starts the sampler thread that keeps current() up to date while it is being asked.
  void start_sampling();
  // The factor (>= 1) to stretch CPU service times by, as last refreshed: an atomic load, and the
  // note of activity that keeps the sampler going (it wakes a sleeping one).
  double current();
  // Reads the usage and updates the factor unless the last refresh is younger than the interval
  // (or another refresh is under way); returns the factor.
  double refresh(Clock::time_point now = Clock::now());

  // The newest observation's weight: about 0.1 s of memory at the default interval, so a burst
  // of transport work moves routing within a few of its requests and a passing spell is soon
  // forgotten.
  static constexpr double kSmoothing = 0.2;

 private:
  void sample();

  const int cores_;
  const UsageProbe probe_;
  const Clock::duration interval_;
  std::mutex mutex_;  // one refresher at a time; the others read the last factor
  Clock::time_point last_time_{};
  Usage last_usage_{};
  double other_cores_ = 0;
  std::atomic<double> slowdown_{1.0};

  // The sampler: it sleeps (parked) once current() has not been called for a second; current()
  // takes the mutex only to wake a parked one.
  std::atomic<Clock::rep> last_asked_{0};
  std::atomic<bool> parked_{false};
  std::mutex sampler_mutex_;
  std::condition_variable sampler_wake_;
  bool stopping_ = false;  // under sampler_mutex_
  std::thread sampler_;
};

// The probe of a real process: its CPU clock, and the CPU time `scans_seconds` reports.
CpuContention::UsageProbe process_usage_probe(std::function<double()> scans_seconds);

}  // namespace scan::server

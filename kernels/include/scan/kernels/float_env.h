// Flush-to-zero for the current thread's floating-point unit, for as long as a scope lasts.
//
// Why a scan needs it: a float32 running product of decays above 0.5 never reaches zero. Once it
// falls below the smallest normal number (1.2e-38) every further multiply produces a subnormal,
// and x * 0.75 rounds back up to the smallest subnormal (1.4e-45), so the product stays there for
// the rest of the sequence. x86 cores take a microcoded slow path for every vector instruction
// that meets a subnormal: measured 15x slower than a memcpy-speed scan on [2048,128] float32.
// Flushing results below the smallest normal to 0 (FTZ; subnormal inputs are still read exactly,
// no DAZ) keeps the scan at memory speed: a result is exact, or 0 where the exact product is below
// 1.2e-38 (float32, half types) or 2.2e-308 (float64).
#pragma once

namespace scan::kernels {

// Whether ScopedFlushSubnormals has an effect on this CPU architecture (x86-64: MXCSR's FTZ bit).
// Elsewhere the guard does nothing and results keep their subnormals.
bool subnormal_flush_supported();

// Sets flush-to-zero (and clears denormals-are-zero) on the calling thread when `enable` is true
// and restores the previous mode on destruction; `enable` false leaves the mode alone.
class ScopedFlushSubnormals {
 public:
  explicit ScopedFlushSubnormals(bool enable);
  ~ScopedFlushSubnormals();

  ScopedFlushSubnormals(const ScopedFlushSubnormals&) = delete;
  ScopedFlushSubnormals& operator=(const ScopedFlushSubnormals&) = delete;

 private:
  unsigned saved_mode_ = 0;
  bool changed_ = false;
};

}  // namespace scan::kernels

#include "scan/kernels/float_env.h"

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define SCAN_HAS_MXCSR 1
#endif

namespace scan::kernels {

#if defined(SCAN_HAS_MXCSR)
namespace {
// MXCSR bit 15 (FTZ: tiny results become 0), and not bit 6 (DAZ: subnormal operands read as 0).
// Flushing results is what keeps a running product off the slow path (it stays 0 once flushed);
// reading subnormal inputs as 0 would break the bound the service documents: [1e30, 1e-40] is
// 1e-10, not 0, and [inf, 1e-40] is inf, not NaN. A subnormal input costs one slow multiply.
constexpr unsigned kFlushToZero = 1u << 15;
constexpr unsigned kDenormalsAreZero = 1u << 6;
}  // namespace

bool subnormal_flush_supported() { return true; }

ScopedFlushSubnormals::ScopedFlushSubnormals(bool enable) {
  if (!enable) return;
  saved_mode_ = _mm_getcsr();
  // DAZ cleared too: a caller's DAZ would read this scan's subnormal inputs as 0.
  const unsigned flushing = (saved_mode_ | kFlushToZero) & ~kDenormalsAreZero;
  if (flushing != saved_mode_) {
    _mm_setcsr(flushing);
    changed_ = true;
  }
}

ScopedFlushSubnormals::~ScopedFlushSubnormals() {
  if (changed_) _mm_setcsr(saved_mode_);
}
#else
bool subnormal_flush_supported() { return false; }
ScopedFlushSubnormals::ScopedFlushSubnormals(bool) {}
ScopedFlushSubnormals::~ScopedFlushSubnormals() = default;
#endif

}  // namespace scan::kernels

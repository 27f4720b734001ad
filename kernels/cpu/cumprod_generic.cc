// The portable fallback: baseline x86-64 (SSE2), or any other target build of the cumprod leaf
// kernels.
#define SCAN_CPU_ISA generic
#define SCAN_CPU_ISA_NAME "generic"
#define SCAN_CPU_ISA_GETTER generic_kernels
#define SCAN_CPU_VECTOR_BYTES 16
#define SCAN_CPU_HAS_F16C 0
#include "cumprod_body.h"

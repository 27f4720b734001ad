// The AVX2 + FMA + F16C (-mavx2 -mfma -mf16c via sources.cmake) build of the cumprod leaf kernels.
#define SCAN_CPU_ISA avx2
#define SCAN_CPU_ISA_NAME "avx2"
#define SCAN_CPU_ISA_GETTER avx2_kernels
#define SCAN_CPU_VECTOR_BYTES 32
#define SCAN_CPU_HAS_F16C 1
#include "cumprod_body.h"

// The AVX-512 F/BW/VL/DQ (flags via sources.cmake) build of the cumprod leaf kernels.
#define SCAN_CPU_ISA avx512
#define SCAN_CPU_ISA_NAME "avx512"
#define SCAN_CPU_ISA_GETTER avx512_kernels
#define SCAN_CPU_VECTOR_BYTES 64
#define SCAN_CPU_HAS_F16C 1
#include "cumprod_body.h"

// The AVX-512 build of the cumprod leaf kernels plus AVX512-BF16 (flags via sources.cmake): the
// bfloat16 kernels round their results with VCVTNE2PS2BF16; every other dtype compiles to the same
// code as cumprod_avx512.cc. The planner picks this table when the CPU has AVX512-BF16.
#define SCAN_CPU_ISA avx512bf16
#define SCAN_CPU_ISA_NAME "avx512"
#define SCAN_CPU_ISA_GETTER avx512bf16_kernels
#define SCAN_CPU_VECTOR_BYTES 64
#define SCAN_CPU_HAS_F16C 1
#define SCAN_CPU_HAS_AVX512BF16 1
#include "cumprod_body.h"

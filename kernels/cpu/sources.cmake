# Native CPU cumprod and the shared thread pool. Only the leaf-kernel builds get ISA flags; the
# rest of the library stays baseline x86-64 and picks a build at run time from the CPU features.
target_sources(scan_kernels_cpu PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/cpu_cumprod.cc
  ${CMAKE_CURRENT_LIST_DIR}/cumprod_generic.cc
  ${CMAKE_CURRENT_LIST_DIR}/float_env.cc
  ${CMAKE_CURRENT_LIST_DIR}/thread_pool.cc
)

if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  target_sources(scan_kernels_cpu PRIVATE
    ${CMAKE_CURRENT_LIST_DIR}/cumprod_avx2.cc
    ${CMAKE_CURRENT_LIST_DIR}/cumprod_avx512.cc
    ${CMAKE_CURRENT_LIST_DIR}/cumprod_avx512bf16.cc
  )
  # FMA for float64's compensated products (every AVX2 CPU has it; the planner checks anyway).
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/cumprod_avx2.cc
    PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
  # 512-bit vectors on purpose: the loops are memory-bound streams, where the wider registers halve
  # the instruction count and the frequency penalty of older Intel parts does not dominate.
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/cumprod_avx512.cc
    PROPERTIES COMPILE_OPTIONS
    "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mf16c;-mprefer-vector-width=512")
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/cumprod_avx512bf16.cc
    PROPERTIES COMPILE_OPTIONS
    "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512bf16;-mf16c;-mprefer-vector-width=512")
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/cpu_cumprod.cc
    PROPERTIES COMPILE_DEFINITIONS SCAN_CPU_X86_ISAS)
endif()

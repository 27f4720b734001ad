# CUDA cumprod kernels. Included from kernels/CMakeLists.txt only when SCAN_HAVE_CUDA.
add_library(scan_kernels_cuda STATIC
  ${CMAKE_CURRENT_LIST_DIR}/cuda_cumprod.cu
  ${CMAKE_CURRENT_LIST_DIR}/cumprod_f32.cu
  ${CMAKE_CURRENT_LIST_DIR}/cumprod_f64.cu
  ${CMAKE_CURRENT_LIST_DIR}/cumprod_f16.cu
  ${CMAKE_CURRENT_LIST_DIR}/cumprod_bf16.cu
  # The GPU backend's chunked pipeline (widening and carry passes).
  ${CMAKE_CURRENT_LIST_DIR}/chunk_carry.cu
)
# PIC so that the benchmark's small C-ABI shim (loaded by its PyTorch comparison script) can link
# it into a shared library.
set_target_properties(scan_kernels_cuda PROPERTIES
  POSITION_INDEPENDENT_CODE ON
  CUDA_STANDARD 17
  CUDA_STANDARD_REQUIRED ON)
# The public header needs only the shared vocabulary; callers also need the CUDA runtime.
target_link_libraries(scan_kernels_cuda PUBLIC scan_kernels_cpu CUDA::cudart_static)
# -lineinfo: profilers map SASS to source lines at no runtime cost.
target_compile_options(scan_kernels_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-lineinfo>)
scan_warnings(scan_kernels_cuda)

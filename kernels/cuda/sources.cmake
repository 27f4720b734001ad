# CUDA cumprod kernels. Included from kernels/CMakeLists.txt only when SCAN_HAVE_CUDA.
add_library(scan_kernels_cuda STATIC
  ${CMAKE_CURRENT_LIST_DIR}/dispatch/cuda_cumprod.cu
  ${CMAKE_CURRENT_LIST_DIR}/dispatch/cumprod_f32.cu
  ${CMAKE_CURRENT_LIST_DIR}/dispatch/cumprod_f64.cu
  ${CMAKE_CURRENT_LIST_DIR}/dispatch/cumprod_f16.cu
  ${CMAKE_CURRENT_LIST_DIR}/dispatch/cumprod_bf16.cu
  ${CMAKE_CURRENT_LIST_DIR}/cuda_status.cc
  # The chunked host/device pipeline: widening and carry passes and the keep-awake kernel on the
  # device; lanes, staging copies, the host memory registry and device discovery on the host
  # (plain C++ against the runtime API, compiled by the host compiler).
  ${CMAKE_CURRENT_LIST_DIR}/pipeline/chunk_carry.cu
  ${CMAKE_CURRENT_LIST_DIR}/pipeline/devices.cc
  ${CMAKE_CURRENT_LIST_DIR}/pipeline/host_registry.cc
  ${CMAKE_CURRENT_LIST_DIR}/pipeline/ipc_mapping.cc
  ${CMAKE_CURRENT_LIST_DIR}/pipeline/keep_awake.cu
  ${CMAKE_CURRENT_LIST_DIR}/pipeline/pipeline.cc
  ${CMAKE_CURRENT_LIST_DIR}/pipeline/staging_copy.cc
)
# Internal headers by their folder ("pipeline/staging_copy.h"); the public API stays in include/.
target_include_directories(scan_kernels_cuda PRIVATE ${CMAKE_CURRENT_LIST_DIR})
# PIC so that the benchmark's small C-ABI shim (loaded by its PyTorch comparison script) can link
# it into a shared library.
set_target_properties(scan_kernels_cuda PROPERTIES
  POSITION_INDEPENDENT_CODE ON
  CUDA_STANDARD 17
  CUDA_STANDARD_REQUIRED ON)
# The public header needs only the shared vocabulary; callers also need the CUDA runtime.
target_link_libraries(scan_kernels_cuda PUBLIC scan_kernels_cpu scan_chunk_plan CUDA::cudart_static)
# -lineinfo: profilers map SASS to source lines at no runtime cost.
target_compile_options(scan_kernels_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-lineinfo>)
scan_warnings(scan_kernels_cuda)

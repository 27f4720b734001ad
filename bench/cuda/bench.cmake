# CUDA cumprod benchmark: our kernel against a device-to-device copy (and, through the Python
# script beside it, against torch.cumprod) on the GPU machine. See bench/RESULTS.md.
add_executable(cuda_cumprod_bench
  ${CMAKE_CURRENT_LIST_DIR}/cuda_cumprod_bench.cc
  ${CMAKE_CURRENT_LIST_DIR}/bench_kernels.cu)
target_link_libraries(cuda_cumprod_bench PRIVATE scan_kernels_cuda)
scan_warnings(cuda_cumprod_bench)

# Loaded by torch_cumprod_bench.py with ctypes; no LibTorch link, so it builds wherever nvcc does.
add_library(scan_cumprod_capi SHARED ${CMAKE_CURRENT_LIST_DIR}/cumprod_capi.cc)
target_link_libraries(scan_cumprod_capi PRIVATE scan_kernels_cuda)
set_target_properties(scan_cumprod_capi PROPERTIES CXX_VISIBILITY_PRESET hidden)
scan_warnings(scan_cumprod_capi)

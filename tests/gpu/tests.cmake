# CUDA kernel correctness (label gpu). Every case that needs a device skips where there is none, so
# the suite builds and passes on CI machines that have nvcc but no GPU.
scan_test(cuda_cumprod_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/cuda_cumprod_test.cc
  LIBS scan_kernels_cuda
  LABELS gpu)

# The server's GPU backend: chunked pipeline, lanes, health (label gpu; skips without a device).
# Absent from builds of the kernels alone (scripts/device-run.sh's fallback project).
if(TARGET scan_backend_cuda)
  scan_test(cuda_backend_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/cuda_backend_test.cc
    LIBS scan_backend_cuda scan_kernels_cuda scan_backend_cpu_torch scan_kernels_cpu
    LABELS gpu)
endif()

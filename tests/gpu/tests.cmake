# CUDA kernel correctness (label gpu). Every case that needs a device skips where there is none, so
# the suite builds and passes on CI machines that have nvcc but no GPU.
scan_test(cuda_cumprod_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/cuda_cumprod_test.cc
  LIBS scan_kernels_cuda
  LABELS gpu)

# Native CPU kernel and thread pool: pure compute, no LibTorch (torch::cumprod comparisons live in
# the server's tests).
scan_test(scan_kernels_cpu_test
  SOURCES
    ${CMAKE_CURRENT_LIST_DIR}/cpu_cumprod_test.cc
    ${CMAKE_CURRENT_LIST_DIR}/thread_pool_test.cc
  LIBS scan_kernels_cpu
  LABELS unit)

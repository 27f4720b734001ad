# Native CPU cumprod vs torch::cumprod vs memcpy in one program (see bench/RESULTS.md). Only the
# benchmark links LibTorch; scan_kernels_cpu stays free of it.
find_package(Torch REQUIRED)
add_executable(scan_bench_cpu ${CMAKE_CURRENT_LIST_DIR}/cpu_bench.cc)
target_link_libraries(scan_bench_cpu PRIVATE scan_kernels_cpu ${TORCH_LIBRARIES})
scan_warnings(scan_bench_cpu)

# Accuracy and agreement of every backend against float64 (bench/RESULTS.md, "Numerics"). Links
# LibTorch for torch.cumprod itself, as scan_bench_cpu does; with CUDA it adds cuda:0.
find_package(Torch REQUIRED)
add_executable(scan_numerics_report ${CMAKE_CURRENT_LIST_DIR}/numerics_report.cc)
target_link_libraries(scan_numerics_report PRIVATE scan_backend_cpu_torch scan_kernels_cpu
  ${TORCH_LIBRARIES})
if(SCAN_HAVE_CUDA)
  target_link_libraries(scan_numerics_report PRIVATE scan_kernels_cuda)
  target_compile_definitions(scan_numerics_report PRIVATE SCAN_NUMERICS_WITH_CUDA)
endif()
scan_warnings(scan_numerics_report)

# The load generator's statistics and reports (bench/load).
scan_test(scan_bench_report_tests
  SOURCES bench/bench_report_test.cc
  LIBS scan_bench_report
  LABELS unit)

# scan-bench against the benchmark servers it drives, built only with SCAN_BUILD_BENCH.
if(SCAN_BUILD_BENCH)
  add_test(NAME e2e.bench_smoke
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/bench/bench_smoke.sh $<TARGET_FILE:scan-bench>
            $<TARGET_FILE:scan-bench-echo> $<TARGET_FILE:scan-bench-tcp-echo>)
  set_tests_properties(e2e.bench_smoke PROPERTIES LABELS e2e TIMEOUT 120)
endif()

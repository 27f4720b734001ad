# Client library transport, zero-copy codec and the scan-bench load generator (issue 7).
scan_test(scan_client_transport_tests
  SOURCES client/wire_codec_test.cc client/bench_report_test.cc client/transport_test.cc
  LIBS scan_client_lib scan_bench_report scan_wire_service
  LABELS unit)

# The servers it drives are benchmark programs, built only with SCAN_BUILD_BENCH.
if(SCAN_BUILD_BENCH)
  add_test(NAME e2e.bench_smoke
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/client/bench_smoke.sh $<TARGET_FILE:scan-bench>
            $<TARGET_FILE:scan-bench-echo> $<TARGET_FILE:scan-bench-tcp-echo>)
  set_tests_properties(e2e.bench_smoke PROPERTIES LABELS e2e TIMEOUT 120)
endif()
